"""cuDNN dense 3x3 stride-1 pad-1 convolution: the whole-layer time a Winograd layer must beat.

Optional. Through PyTorch when importable (cuDNN with `benchmark`, i.e. cudnnFind per shape), else
through the cuDNN Python frontend (`import cudnn`, NHWC fp16/bf16 only), else `Unsupported`.
Operands are the caller's CuPy arrays, shared zero-copy through DLPack, and the convolution runs on
CuPy's current stream, so CuPy-side timing (gpu/timing.py) measures it like any other kernel.

Layouts: NCHW x[B, c, H, W], w[n, c, 3, 3], out[B, n, H, W];
         NHWC x[B, H, W, c], w[n, 3, 3, c], out[B, H, W, n] (cuDNN's fast layout, channels_last in torch).
dtypes: fp16, bf16 (uint16 bits, as gpu/arrays.py stores them), fp32 (tensor cores off: true fp32),
tf32 (fp32 storage, TF32 tensor cores allowed). Accumulation is fp32.
"""

from __future__ import annotations

from typing import Any, Callable

from cutlass_wsp.gpu.launch import stream_pointer
from cutlass_wsp.dtypes import DType
from cutlass_wsp.errors import InputError, KernelError, Unsupported
from cutlass_wsp.gpu.arrays import as_dtype, storage_dtype

UNAVAILABLE = "cuDNN unavailable: install torch or nvidia-cudnn-frontend (pip install 'cutlass-wsp[cudnn]')"
LAYOUTS = ("nchw", "nhwc")


def _torch_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    except Exception as e:  # a broken install must not take the toolkit down
        return False, f"torch failed to import ({type(e).__name__}: {e})"
    try:
        if not torch.cuda.is_available():
            return False, "torch sees no CUDA GPU"
        if not torch.backends.cudnn.is_available():
            return False, "torch was built without cuDNN"
        return True, f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    except Exception as e:
        return False, f"torch cannot use CUDA ({type(e).__name__}: {e})"


def _frontend_status() -> tuple[bool, str]:
    try:
        import cudnn
    except ImportError:
        return False, "nvidia-cudnn-frontend is not installed"
    except Exception as e:
        return False, f"cudnn (frontend) failed to import ({type(e).__name__}: {e})"
    try:
        return True, f"cudnn-frontend {getattr(cudnn, '__version__', '?')}, cuDNN {cudnn.backend_version()}"
    except Exception as e:
        return False, f"cudnn frontend cannot load the cuDNN library ({type(e).__name__}: {e})"


def available() -> tuple[bool, str]:
    """(True, 'torch 2.11.0, cuDNN 91900') or (False, why not). Never raises."""
    ok, why = _torch_status()
    if ok:
        return True, why
    ok2, why2 = _frontend_status()
    if ok2:
        return True, why2
    return False, f"{UNAVAILABLE} [{why}; {why2}]"


def _check_layout(layout: str) -> str:
    name = str(layout).lower()
    if name not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}", "use 'nchw' or 'nhwc'")
    return name


class CudnnConv:
    """One dense 3x3 'same' conv layer, c -> n channels on H x W maps, `batch` images."""

    available = staticmethod(available)

    def __init__(self, c: int, n: int, H: int, W: int, batch: int, dt: DType | str, layout: str,
                 *, backend: str = "auto"):
        for name, v in (("c", c), ("n", n), ("H", H), ("W", W), ("batch", batch)):
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name}={v!r} is not a positive integer", f"pass {name} >= 1")
        self.c, self.n, self.H, self.W, self.batch = c, n, H, W, batch
        self.dtype = as_dtype(dt)
        self.layout = _check_layout(layout)
        if backend not in ("auto", "torch", "cudnn-frontend"):
            raise InputError(f"unknown cuDNN backend {backend!r}", "use 'auto', 'torch' or 'cudnn-frontend'")
        t_ok, t_why = _torch_status()
        if backend in ("auto", "torch") and t_ok:
            self.backend, self.version = "torch", t_why
            self._impl: Any = _TorchConv(self)
        elif backend == "torch":
            raise Unsupported(f"cuDNN through torch unavailable: {t_why}", "pip install 'cutlass-wsp[cudnn]'")
        else:
            f_ok, f_why = _frontend_status()
            if not f_ok:
                raise Unsupported(f"{UNAVAILABLE} [{t_why}; {f_why}]",
                                  "or compare against cuBLAS/CUTLASS GEMM batches only")
            self.backend, self.version = "cudnn-frontend", f_why
            self._impl = _FrontendConv(self)

    @property
    def method(self) -> str:
        """How the conv is called: 'aten.cudnn_convolution.out', 'F.conv2d+copy' or 'cudnn-frontend graph'."""
        return getattr(self._impl, "method", self.backend)

    # --- shapes and costs ------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        B, c, H, W = self.batch, self.c, self.H, self.W
        return (B, c, H, W) if self.layout == "nchw" else (B, H, W, c)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, 3, 3) if self.layout == "nchw" else (self.n, 3, 3, self.c)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        B, n, H, W = self.batch, self.n, self.H, self.W
        return (B, n, H, W) if self.layout == "nchw" else (B, H, W, n)

    def flops(self) -> int:
        return 2 * self.batch * self.H * self.W * self.n * self.c * 9

    def bytes_moved(self) -> int:
        """Input, weights and output moved once."""
        b, c, n, hw = self.batch, self.c, self.n, self.H * self.W
        return self.dtype.itemsize * (b * c * hw + n * c * 9 + b * n * hw)

    # --- running ---------------------------------------------------------------------------------
    def _check(self, a, name: str, shape) -> None:
        import cupy

        if not isinstance(a, cupy.ndarray):
            raise InputError(f"{name} is a {type(a).__name__}, not a CuPy array",
                             "move it to the GPU first (cutlass_wsp.gpu.arrays.from_host)")
        if tuple(a.shape) != tuple(shape):
            raise InputError(f"{name} has shape {tuple(a.shape)}; expected {tuple(shape)} ({self.layout.upper()})",
                             f"allocate it with CudnnConv.{name}_shape")
        if a.dtype != storage_dtype(self.dtype):
            raise InputError(f"{name} has dtype {a.dtype}, not the {self.dtype.name} storage {storage_dtype(self.dtype)}",
                             "convert it with cutlass_wsp.gpu.arrays.to_storage")
        if not a.flags.c_contiguous:
            raise InputError(f"{name} is not C-contiguous", "pass cupy.ascontiguousarray(...) of it")

    def launcher(self, x, w, out) -> Callable[[], None]:
        """A no-argument callable that enqueues the conv out = conv(x, w) on CuPy's current stream
        (operands bound once, so a timing loop times only the launch)."""
        self._check(x, "input", self.input_shape)
        self._check(w, "weight", self.weight_shape)
        self._check(out, "output", self.output_shape)
        return self._impl.launcher(x, w, out)

    def run(self, x, w, out=None):
        """out = conv(x, w) on CuPy's current stream; `out` is allocated when None. Returns out."""
        import cupy

        if out is None:
            out = cupy.empty(self.output_shape, dtype=storage_dtype(self.dtype))
        self.launcher(x, w, out)()
        return out


class _TorchConv:
    """torch.ops.aten.cudnn_convolution.out: cuDNN (benchmark mode) writing straight into `out`."""

    def __init__(self, conv: CudnnConv):
        import torch

        self.conv = conv
        self.allow_tf32 = conv.dtype.name == "tf32"
        self.values = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                       "tf32": torch.float32}[conv.dtype.name]
        self._streams: dict[int, Any] = {}
        self.method = ""

    def _stream(self):
        """torch's handle on CuPy's current stream."""
        from cutlass_wsp.gpu.torch_interop import current_stream

        return current_stream(self._streams)

    def _tensor(self, a):
        """Zero-copy torch view of a CuPy storage array, logical NCHW (channels_last strides for NHWC)."""
        from cutlass_wsp.gpu.torch_interop import view

        t = view(a, self.values)
        return t.permute(0, 3, 1, 2) if self.conv.layout == "nhwc" else t

    def launcher(self, x, w, out) -> Callable[[], None]:
        import torch
        import torch.nn.functional as F

        with torch.cuda.stream(self._stream()):
            tx, tw, to = self._tensor(x), self._tensor(w), self._tensor(out)
        allow_tf32 = self.allow_tf32

        def direct() -> None:  # cuDNN writing straight into `out`: no allocation or copy timed
            torch.ops.aten.cudnn_convolution.out(tx, tw, [1, 1], [1, 1], [1, 1], 1, True, False,
                                                 allow_tf32, out=to)

        def via_conv2d() -> None:  # for a torch whose cudnn_convolution.out is missing or differs
            with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                            allow_tf32=allow_tf32):
                to.copy_(F.conv2d(tx, tw, padding=1))

        state = {"conv": direct, "tried": False}
        self.method = "aten.cudnn_convolution.out"

        def launch() -> None:
            with torch.cuda.stream(self._stream()):
                try:
                    state["conv"]()
                except (RuntimeError, AttributeError) as e:
                    if state["tried"] or state["conv"] is via_conv2d:
                        raise KernelError(f"cuDNN convolution failed: {str(e).splitlines()[0]}",
                                          "check the GPU state; the layer shape is valid for cuDNN") from None
                    state["conv"], self.method = via_conv2d, "F.conv2d+copy"
                    via_conv2d()
                state["tried"] = True

        return launch


class _FrontendConv:
    """cuDNN Python frontend graph (conv_fprop), built once per layer. NHWC fp16/bf16 only: the graph
    API's convolution engines want channels-last operands, and fp32 without TF32 cannot be pinned here."""

    def __init__(self, conv: CudnnConv):
        import cudnn

        if conv.layout != "nhwc" or conv.dtype.name not in ("fp16", "bf16"):
            raise Unsupported(f"the cuDNN frontend path serves NHWC fp16/bf16, not {conv.layout.upper()} {conv.dtype.name}",
                              "install torch for the other layouts and dtypes (pip install 'cutlass-wsp[cudnn]')")
        B, c, n, H, W = conv.batch, conv.c, conv.n, conv.H, conv.W
        io = cudnn.data_type.HALF if conv.dtype.name == "fp16" else cudnn.data_type.BFLOAT16
        try:
            self.handle = cudnn.create_handle()
            g = cudnn.pygraph(handle=self.handle, io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                              compute_data_type=cudnn.data_type.FLOAT)
            self.X = g.tensor(name="X", dim=[B, c, H, W], stride=[H * W * c, 1, W * c, c], data_type=io)
            self.Wt = g.tensor(name="W", dim=[n, c, 3, 3], stride=[9 * c, 1, 3 * c, c], data_type=io)
            self.Y = g.conv_fprop(self.X, self.Wt, padding=[1, 1], stride=[1, 1], dilation=[1, 1],
                                  compute_data_type=cudnn.data_type.FLOAT)
            self.Y.set_output(True).set_data_type(io).set_dim([B, n, H, W]).set_stride([H * W * n, 1, W * n, n])
            g.build([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        except Exception as e:
            raise Unsupported(f"the cuDNN frontend could not build this conv ({type(e).__name__}: {e})",
                              "install torch (pip install 'cutlass-wsp[cudnn]')") from None
        self.graph = g
        self.method = "cudnn-frontend graph"
        import cupy

        self.workspace = cupy.empty(max(1, g.get_workspace_size()), dtype=cupy.uint8)
        self._stream_ptr: int | None = None

    def launcher(self, x, w, out) -> Callable[[], None]:
        import cudnn

        # The frontend reads each operand's pointer through __dlpack__ at every execute.
        pack = {self.X: x, self.Wt: w, self.Y: out}

        def launch() -> None:
            ptr = stream_pointer(None)
            if ptr != self._stream_ptr:  # set_stream costs microseconds: only when it changes
                cudnn.set_stream(handle=self.handle, stream=ptr)
                self._stream_ptr = ptr
            try:
                self.graph.execute(pack, self.workspace, handle=self.handle)
            except TypeError:  # frontends before 1.2 take the handle from the graph only
                self.graph.execute(pack, self.workspace)

        return launch
