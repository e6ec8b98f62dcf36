"""The transforms' NVRTC builds go through the kernel compile cache: a complete key, atomic publish, a
corrupt entry is a miss, a failure keeps source and log and raises CompileError. A fake NVRTC stands in
for the compiler; with a real libnvrtc (pip nvidia-cuda-nvrtc, or a CUDA toolkit) the real transform
sources are compiled too, no GPU needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cutlass_wsp.errors import CompileError, ToolchainError
from cutlass_wsp.gpu import transforms
from cutlass_wsp.kernels.cache import KernelCache, NvrtcCompiler, NvrtcFailure

SOURCE = 'extern "C" __global__ void k(float* a) { a[threadIdx.x] *= 2.0f; }\n'


class FakeNvrtc(NvrtcCompiler):
    """Records every compile; 'BROKEN' in a source fails it with an NVRTC-style log."""

    def __init__(self, version: str = "13.0", cubin: bool = True):
        self._version, self._cubin = version, cubin
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def version(self) -> str:
        return self._version

    def cubin(self, arch: int) -> bool:
        return self._cubin

    def compile(self, source, filename, options):
        self.calls.append((filename, tuple(options)))
        if "BROKEN" in source:
            line = source.splitlines().index("BROKEN") + 1
            raise NvrtcFailure(f'{filename}({line}): error: identifier "BROKEN" is undefined\n\n'
                               f"1 error detected in the compilation of \"{filename}\".\n")
        return b"\x7fELF" + source.encode() + " ".join(options).encode(), ""


@pytest.fixture
def cache(tmp_path) -> KernelCache:
    return KernelCache(tmp_path / "cache")          # no nvcc toolchain needed for NVRTC builds


def test_a_second_get_is_a_hit(cache):
    nv = FakeNvrtc()
    first = cache.get_nvrtc(SOURCE, "k", options=("-std=c++17",), arch=90, compiler=nv)
    assert first.is_file() and first.suffix == ".cubin" and first.parent == cache.kernels_dir
    assert cache.get_nvrtc(SOURCE, "k", options=("-std=c++17",), arch=90, compiler=nv) == first
    assert len(nv.calls) == 1
    # another process (a fresh cache object on the same directory) finds it too
    assert KernelCache(cache.root).get_nvrtc(SOURCE, "k", options=("-std=c++17",), arch=90, compiler=nv) == first
    assert len(nv.calls) == 1
    manifest = json.loads((cache.kernels_dir / f"{first.name.rsplit('-', 1)[0]}.json").read_text())
    assert manifest["compiler"] == "nvrtc" and manifest["artifact"] == first.name
    assert manifest["options"] == ["-std=c++17", "-ftz=true", "-arch=sm_90", "--device-as-default-execution-space"]
    assert (cache.kernels_dir / f"{first.name.rsplit('-', 1)[0]}.cu").read_text() == SOURCE


def test_the_options_are_what_cupy_rawmodule_compiled_with():
    """CuPy 14's RawModule(code=, options=) adds -ftz=true, the arch and --device-as-default-execution-space."""
    assert FakeNvrtc().options(("-std=c++17",), 90) == (
        "-std=c++17", "-ftz=true", "-arch=sm_90", "--device-as-default-execution-space")
    assert FakeNvrtc(cubin=False).options((), 120)[1] == "-arch=compute_120"


@pytest.mark.parametrize("change", ["source", "options", "arch", "nvrtc"])
def test_the_key_names_source_options_arch_and_nvrtc_version(cache, change):
    nv = FakeNvrtc()
    base = dict(source=SOURCE, options=("-std=c++17",), arch=90)
    first = cache.get_nvrtc(base["source"], "k", options=base["options"], arch=base["arch"], compiler=nv)
    changed = dict(base)
    if change == "source":
        changed["source"] = SOURCE.replace("2.0f", "3.0f")
    elif change == "options":
        changed["options"] = ("-std=c++20",)
    elif change == "arch":
        changed["arch"] = 80
    else:
        nv = FakeNvrtc(version="13.1")
    again = cache.get_nvrtc(changed["source"], "k", options=changed["options"], arch=changed["arch"], compiler=nv)
    assert again != first and again.is_file() and first.is_file()


def test_publishing_moves_the_binary_first_and_the_manifest_last(cache, monkeypatch):
    moves = []
    real = os.replace

    def spy(src, dst):
        moves.append(Path(dst).name)
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = cache.get_nvrtc(SOURCE, "k", arch=90, compiler=FakeNvrtc())
    assert moves[0] == path.name and moves[-1].endswith(".json")       # readers see nothing or everything
    assert not list(cache.tmp_dir.iterdir())                            # the build directory is gone


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "delete"])
def test_a_corrupt_entry_is_a_miss_and_is_rebuilt(cache, damage):
    nv = FakeNvrtc()
    path = cache.get_nvrtc(SOURCE, "k", arch=90, compiler=nv)
    data = path.read_bytes()
    manifest = cache.kernels_dir / f"{path.name.rsplit('-', 1)[0]}.json"
    if damage == "truncate":
        path.write_bytes(data[:5])
    elif damage == "flip":
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])               # same size: the sha256 catches it
    elif damage == "manifest":
        manifest.write_text("{not json")
    else:
        path.unlink()
    fresh = KernelCache(cache.root)                                      # no in-process memory of the entry
    again = fresh.get_nvrtc(SOURCE, "k", arch=90, compiler=nv)
    assert len(nv.calls) == 2 and again.read_bytes() == data


def test_a_failed_build_keeps_source_and_log_and_raises_compile_error(cache):
    source = 'extern "C" __global__ void k() {\nBROKEN\n}\n'
    with pytest.raises(CompileError) as e:
        cache.get_nvrtc(source, "wsp_input_transform", arch=90, compiler=FakeNvrtc())
    err = e.value
    kept = Path(err.source_path)
    assert kept.parent == cache.failed_dir and kept.read_text() == source
    assert 'identifier "BROKEN" is undefined' in err.log and str(kept) in err.log
    assert "NVRTC could not build wsp_input_transform" in err.problem
    assert "> " in err.problem and "BROKEN" in err.problem                # the failing line, shown
    assert kept.with_suffix(".log").read_text().startswith(str(kept))
    assert not list(cache.kernels_dir.glob("*.json"))                     # nothing published


def test_without_nvrtc_it_is_a_toolchain_error(cache, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nvrtc(name, *a, **k):
        if name.startswith("cupy_backends"):
            raise ImportError("no cupy")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_nvrtc)
    with pytest.raises(ToolchainError, match="NVRTC is not available"):
        cache.get_nvrtc(SOURCE, "k", arch=90)


def test_the_transforms_compile_through_the_cache(cache):
    """compile_module is what the transforms' kernels go through (the GPU only loads the result)."""
    nv = FakeNvrtc()
    src = transforms.render_input(4, "fp16", "nhwc")[0]
    path = transforms.compile_module(src, transforms.INPUT_KERNEL, 90, cache=cache, compiler=nv)
    assert path.parent == cache.kernels_dir and path.name.startswith(transforms.INPUT_KERNEL)
    assert nv.calls[0][1][0] == "-std=c++17"                            # the options the transforms always had
    assert transforms.compile_module(src, transforms.INPUT_KERNEL, 90, cache=cache, compiler=nv) == path
    assert len(nv.calls) == 1


def _real_nvrtc() -> bool:
    try:
        NvrtcCompiler().version()
        return True
    except ToolchainError:
        return False


@pytest.mark.skipif(not _real_nvrtc(), reason="no libnvrtc (pip install nvidia-cuda-nvrtc, or a CUDA toolkit)")
@pytest.mark.parametrize("p,dtype,layout,compact", [(4, "fp16", "nhwc", False), (4, "fp16", "nhwc", True),
                                                    (6, "bf16", "nchw", False), (4, "fp32", "nhwc", True)])
def test_real_nvrtc_builds_the_transform_kernels_for_sm90(tmp_path, p, dtype, layout, compact):
    cache = KernelCache(tmp_path / "cache")
    for render, kernel in ((transforms.render_input, transforms.INPUT_KERNEL),
                           (transforms.render_output, transforms.OUTPUT_KERNEL)):
        src = render(p, dtype, layout, compact=compact)[0]
        path = transforms.compile_module(src, kernel, 90, cache=cache)
        data = path.read_bytes()
        assert data[:4] == b"\x7fELF" and kernel.encode() in data       # an sm_90 cubin holding the kernel


@pytest.mark.skipif(not _real_nvrtc(), reason="no libnvrtc (pip install nvidia-cuda-nvrtc, or a CUDA toolkit)")
def test_real_nvrtc_errors_come_back_as_compile_errors(tmp_path):
    with pytest.raises(CompileError) as e:
        KernelCache(tmp_path / "cache").get_nvrtc('extern "C" __global__ void k() {\n  undefined_thing();\n}\n',
                                                  "k", arch=90)
    assert "undefined_thing" in e.value.log and Path(e.value.source_path).is_file()
