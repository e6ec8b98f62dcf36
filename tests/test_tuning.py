"""Kernel tuning on the CPU: the dense kernel family's candidate sets (deterministic, valid, shaped by the
problem), the tuning store (round trip, key, corruption, atomic writes), the tuned choices a run reads
once (TunedChoices), and the search's choice of a winner, with a fake nvcc and an injected measure
function standing in for the GPU."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from cutlass_wsp.errors import InputError, KernelError, Unsupported, VerificationError
from cutlass_wsp.families import registry
from cutlass_wsp.families.registry import candidate_union, candidates
from cutlass_wsp.kernels import candidates as cand
from cutlass_wsp.kernels import emitter, search, store as tuning_store
from cutlass_wsp.kernels.cache import KernelCache
from cutlass_wsp.kernels.candidates import tile_count
from cutlass_wsp.kernels.description import KernelDesc, default_desc
from cutlass_wsp.kernels.manifest import select
from cutlass_wsp.kernels.search import Trial
from cutlass_wsp.kernels.store import TunedChoices, TuningStore, TuningWarning
from cutlass_wsp.layers import layer_problem, network, unique_shapes
from cutlass_wsp.problem import BatchProblem, round_up

from test_compile_cache import make_fake_toolchain

GPU = "Fake GPU 80GB"


class tuning:
    """The search with this package's kernel families, and what a run reads back (TunedChoices)."""

    DEFAULT_BUDGET_S = search.DEFAULT_BUDGET_S
    tuning_key = staticmethod(tuning_store.tuning_key)

    @staticmethod
    def tune(*a, **kw):
        return search.tune(*a, families=registry.tunable(), **kw)

    @staticmethod
    def tune_many(*a, **kw):
        return search.tune_many(*a, families=registry.tunable(), **kw)

    @staticmethod
    def best_desc(problem, dtype, arch, *, cache, gpu_name, store=None, family="dense"):
        """What a run with this GPU name and the cache's toolchain would run as tuned (None: the default)."""
        choices = TunedChoices.load(cache, store=store, gpu_name=gpu_name, checks=registry.checks())
        return choices.lookup(family, problem, dtype, arch)

    @staticmethod
    def tuned_or_default(problem, dtype, arch, cache, *, gpu_name=None):
        return tuning.best_desc(problem, dtype, arch, cache=cache, gpu_name=gpu_name) or select(problem, dtype, arch)


def batch32_problems(dtype: str = "fp16") -> list[BatchProblem]:
    """The 24 batch-32 shapes: unique VGG-16 / ResNet-18 3x3 layers (conv1_1 aside) at p = 4 and 6."""
    layers = [l for l in network("vgg16") + network("resnet18") if l.prunable]
    out = []
    for p in (4, 6):
        for _, same in unique_shapes(layers).items():
            pr = layer_problem(same[0], 32, p)
            out.append(BatchProblem(pr.L, pr.M, round_up(pr.N, 8 if dtype != "tf32" else 4), pr.K))
    return out


PROBLEMS = batch32_problems()


# ------------------------------------------------------------------------------------ candidates
def test_there_are_24_shapes_and_each_gets_3_to_16_candidates():
    assert len(PROBLEMS) == 24 and len(set(PROBLEMS)) == 24
    for p in PROBLEMS:
        n = len(candidates(p, "fp16", "sm90"))
        # M = 64 streams X once with 64-row ping-pong tiles; nothing else on the menu fits those shapes
        assert (3 if p.M == 64 else 6) <= n <= cand.MAX_CANDIDATES, p


@pytest.mark.parametrize("dtype,arch", [("fp16", "sm90"), ("bf16", "sm90"), ("tf32", "sm90"), ("fp16", "sm80"),
                                        ("tf32", "sm80")])
def test_candidates_are_deterministic_and_start_with_the_default(dtype, arch):
    probs = batch32_problems(dtype)
    first = [candidates(p, dtype, arch) for p in probs]
    again = [candidates(p, dtype, arch) for p in reversed(probs)][::-1]
    assert [[d.name for d in s] for s in first] == [[d.name for d in s] for s in again]
    for p, s in zip(probs, first):
        assert s[0] == select(p, dtype, arch)
        assert len(s) == len(set(s)) and len(s) >= 3
        assert all(d.dtype == dtype and d.family == "dense" for d in s)


@pytest.mark.parametrize("dtype,arch", [("fp16", "sm90"), ("tf32", "sm90"), ("fp16", "sm80")])
def test_every_candidate_validates_and_renders(dtype, arch):
    union = candidate_union(batch32_problems(dtype), dtype, arch)
    for d in union:
        assert d.validate() is d
        src = emitter.render(d)
        assert f'return "{d.name}";' in src
        if d.extra_dict().get("scheduler") == "streamk":
            assert "cutlass::gemm::StreamKScheduler>;" in src
            assert f"arguments.scheduler.splits = {d.extra_dict().get('splits', 1)};" in src
        else:
            assert "StreamKScheduler" not in src


def test_tile_m_follows_m():
    assert cand.tile_m_choices(64) == [64]
    assert cand.tile_m_choices(128) == [128, 64]
    assert cand.tile_m_choices(256) == [256, 128]
    assert cand.tile_m_choices(512) == [256, 128]
    assert cand.tile_m_choices(96) == [128, 64]     # 25 % of the rows empty: still allowed
    assert cand.tile_m_choices(80) == [64]          # 128 would leave 37 % of its rows empty
    for p in PROBLEMS:
        biggest = cand.tile_m_choices(p.M)[0]
        for d in candidates(p, "fp16", "sm90")[1:]:  # the default is kept whatever its tile
            assert d.tile[0] <= biggest, (p, d.name)
            cm = d.cluster[0]
            assert cm == 1 or p.M >= cm * d.tile[0], (p, d.name)   # a cluster spans real tile rows


def test_m64_shapes_never_get_128_row_tiles_besides_the_default():
    p = BatchProblem(16, 64, 401408, 64)
    tiles_m = {d.tile[0] for d in candidates(p, "fp16", "sm90")[1:]}
    assert tiles_m == {64}
    assert all(d.resolved().kernel_schedule != "tma_ws_cooperative" for d in candidates(p, "fp16", "sm90")[1:])


def narrow_for_m(d: KernelDesc, p: BatchProblem) -> bool:
    """A tile narrower than the shape's own: N 64, or M 64 where M would take 128+ rows."""
    return d.tile[1] == 64 or (d.tile[0] == 64 and cand.tile_m_choices(p.M)[-1] > 64)


def test_narrow_tiles_and_1x2_clusters_only_when_tiles_are_few():
    for p in PROBLEMS:
        descs = candidates(p, "fp16", "sm90")
        main = (cand.tile_m_choices(p.M)[0], 128, 64)
        few = cand.waves(p, main) < cand.FEW_WAVES
        narrow = [d for d in descs if narrow_for_m(d, p)]
        assert bool(narrow) == few, p
        assert any(d.cluster[1] == 2 and d.tile[1] == 64 for d in descs) == few, p
        if few:   # the ping-pong narrow tile is there, not only the cooperative one
            assert any(d.tile[:2] == (128, 64) and d.resolved().kernel_schedule == "tma_ws_pingpong"
                       for d in descs), p


def test_sm_count_moves_the_few_tiles_threshold():
    p = BatchProblem(16, 512, 1568, 512)       # VGG 512->512@14, p=4: 208 tiles of 256x128
    assert tile_count(p, (256, 128, 64)) == 16 * 2 * 13
    has_narrow = lambda n: any(narrow_for_m(d, p) for d in candidates(p, "fp16", "sm90", sm_count=n))
    assert not has_narrow(132) and has_narrow(132 * 4)


def test_configs_that_never_won_on_the_h100_are_off_the_menu():
    # the batch-32 H100 run: no-smem epilogue ~3x slower, tma_ws (not persistent) ~30 % slower, stream-K
    # and split-K last everywhere, 256x64 and 2x1 clusters of 128x256/256x128 never fastest (256x128 in
    # 1x2 / 2x2 clusters multicasts W too, a different trade: it is on the menu)
    for dtype in ("fp16", "bf16"):
        for d in candidate_union(batch32_problems(dtype), dtype, "sm90"):
            r = d.resolved()
            assert r.epilogue_schedule == "tma" and r.kernel_schedule != "tma_ws", d.name
            assert not d.extra, d.name
            assert d.tile[:2] != (256, 64), d.name
            assert d.cluster == (1, 1, 1) or d.tile[:2] in ((64, 128), (64, 256), (128, 128), (128, 64)) \
                or (d.tile[:2] == (256, 128) and d.cluster[1] == 2), d.name


def test_tile_k_128_only_where_it_divides_k_and_with_ping_pong():
    for p in PROBLEMS:
        k128 = [d for d in candidates(p, "fp16", "sm90") if d.tile[2] == 128]
        assert bool(k128) == (p.K % 128 == 0), p
        for d in k128:
            assert d.resolved().kernel_schedule == "tma_ws_pingpong" and d.stages == 0
            assert d.stage_bytes() * 2 <= 160 * 1024      # auto stages still find room for >= 2
    # a 128-row shape gets both tile-K-128 ping-pong tiles, a 512-row one only the 128-row one
    assert {d.tile for d in candidates(BatchProblem(16, 128, 6272, 128), "fp16", "sm90") if d.tile[2] == 128} \
        == {(64, 128, 128), (128, 128, 128)}
    assert {d.tile for d in candidates(BatchProblem(16, 512, 6272, 512), "fp16", "sm90") if d.tile[2] == 128} \
        == {(128, 128, 128)}


def test_ping_pong_clusters_multicast_x_only_over_real_tile_rows():
    for p in PROBLEMS:
        for d in candidates(p, "fp16", "sm90"):
            if d.cluster[0] == 2:
                assert p.M >= 2 * d.tile[0], (p, d.name)
    m128 = candidates(BatchProblem(36, 128, 25088, 64), "fp16", "sm90")     # VGG conv2_1, p=6
    assert {d.tile for d in m128 if d.cluster == (2, 1, 1)} == {(64, 128, 64), (64, 256, 64)}
    assert all(d.cluster == (1, 1, 1) for d in candidates(BatchProblem(16, 64, 25088, 64), "fp16", "sm90"))


def test_narrow_alignment_uses_cp_async_without_clusters_or_stream_k():
    p = BatchProblem(16, 512, 100, 512)        # N % 8 != 0: 8-byte accesses
    descs = candidates(p, "fp16", "sm90")
    assert descs[0].alignment == 4
    for d in descs:
        assert d.alignment == 4 and d.cluster == (1, 1, 1) and not d.extra
        assert d.resolved().kernel_schedule.startswith("cpasync"), d.name


def test_two_by_two_clusters_only_where_both_operands_are_re_read():
    for p in PROBLEMS:
        quads = [d for d in candidates(p, "fp16", "sm90") if d.cluster == (2, 2, 1)]
        for d in quads:   # two real tile rows and two real tile columns to multicast over
            assert p.M >= 2 * d.tile[0] and p.N > d.tile[1], (p, d.name)
        assert bool(quads) == (p.M > 128 and p.N > 128), p


def test_wave_fill_counts_the_empty_slots_of_the_last_wave():
    p = BatchProblem(16, 512, 1568, 512)       # VGG conv5_1 p=4
    assert cand.wave_fill(p, (256, 128, 64), sm_count=132) == pytest.approx(416 / 528)
    assert cand.wave_fill(p, (256, 224, 64), sm_count=132) == pytest.approx(224 / 264)
    assert cand.wave_fill(BatchProblem(1, 128, 128 * 132, 64), (128, 128, 64), sm_count=132) == 1.0


def test_fitted_tile_n_fills_the_last_wave_of_small_layers_only():
    conv5 = BatchProblem(16, 512, 1568, 512)   # 1568 = 7 x 224: 224 splits N exactly, fills 85 % vs 79 %
    assert cand.fitted_tile_n(conv5, 256) == 224
    assert cand.fitted_tile_n(conv5, 128) == 160      # 16 x 4 x 10 = 640 tiles: 97 % of 5 waves
    tiles = {d.tile for d in candidates(conv5, "fp16", "sm90")}
    assert (128, 160, 64) in tiles and (256, 224, 64) not in tiles   # 224 accumulators per thread: spills
    assert cand.fitted_tile_n(BatchProblem(16, 512, 6272, 512), 256) is None    # 12 waves: tail is small
    assert cand.fitted_tile_n(BatchProblem(16, 512, 512, 512), 256) is None     # 128 fills 97 % already
    # a fitted tile never wastes more than FIT_MAX_WASTE of its last column tile
    for p in PROBLEMS:
        for tm in cand.tile_m_choices(p.M):
            tn = cand.fitted_tile_n(p, tm)
            if tn is not None:
                covered = -(-p.N // tn) * tn
                assert covered - p.N <= cand.FIT_MAX_WASTE * covered, (p, tn)


def test_tile_n_not_far_above_n():
    p = BatchProblem(36, 512, 128, 512)        # ResNet-18 512->512@7, p=6
    assert all(d.tile[1] <= 128 for d in candidates(p, "fp16", "sm90"))


@pytest.mark.parametrize("dtype,arch", [("fp16", "sm90"), ("fp16", "sm80"), ("tf32", "sm80")])
def test_no_kernel_is_timed_twice_under_two_descriptions(dtype, arch):
    for p in batch32_problems(dtype):
        names = [d.name for d in candidates(p, dtype, arch)]
        assert len(names) == len(set(names)), (p, names)


def test_limit_and_bad_requests():
    p = PROBLEMS[0]
    assert candidates(p, "fp16", "sm90", limit=3) == candidates(p, "fp16", "sm90")[:3]
    with pytest.raises(Unsupported, match="kernel family 'bcbp'"):
        candidates(p, "fp16", "sm90", family="bcbp")
    with pytest.raises(InputError, match="GroupedTuneProblem"):       # each family reads its own problem type
        candidates(p, "fp16", "sm90", family="wsp_r_grouped")
    with pytest.raises(Unsupported, match="limit"):
        candidates(p, "fp16", "sm90", limit=0)


def test_union_has_each_kernel_once_and_covers_every_set():
    union = candidate_union(PROBLEMS, "fp16", "sm90")
    assert len(union) == len(set(union))
    assert set(union) == {d for p in PROBLEMS for d in candidates(p, "fp16", "sm90")}
    assert len(union) < sum(len(candidates(p, "fp16", "sm90")) for p in PROBLEMS)
    assert len(union) <= 24                  # each costs ~40 s of nvcc (2 cores; ~5 s on 16) and a GPU slot
    assert max(len(candidates(p, "fp16", "sm90")) for p in PROBLEMS) <= cand.MAX_CANDIDATES
    assert [d.name for d in candidate_union(batch32_problems("bf16"), "bf16", "sm90")] == \
        [d.name.replace("fp16", "bf16") for d in union]


# --------------------------------------------------------------------------- scheduler knob
def test_scheduler_knob_validation():
    base = default_desc("dense", "fp16", "sm90")
    sk = replace(base, extra=(("scheduler", "streamk"),)).validate()
    assert sk.name.endswith("_schedulerstreamk")
    assert replace(base, extra=(("scheduler", "streamk"), ("splits", 2))).validate().name.endswith("_splits2")
    bad = [
        replace(base, extra=(("scheduler", "persistent"),)),                 # default has no knob: one name
        replace(base, extra=(("splits", 2),)),                               # split-K needs the scheduler
        replace(base, extra=(("scheduler", "streamk"), ("splits", 1))),
        replace(base, extra=(("scheduler", "streamk"), ("splits", "2"))),
        replace(base, tile=(64, 128, 64), kernel_schedule="tma_ws_pingpong", extra=(("scheduler", "streamk"),)),
        replace(default_desc("dense", "fp16", "sm80"), extra=(("scheduler", "streamk"),)),
        replace(base, family="wsp_r_grouped", extra=(("scheduler", "streamk"),)),
    ]
    for d in bad:
        with pytest.raises(Unsupported):
            d.validate()


def test_default_kernels_render_without_the_scheduler():
    src = emitter.render(default_desc("dense", "fp16", "sm90"))
    assert "StreamKScheduler" not in src and "arguments.scheduler" not in src
    assert "CollectiveMainloop, CollectiveEpilogue>;" in src


# ------------------------------------------------------------------------------------ the store
@pytest.fixture
def cache(tmp_path, monkeypatch) -> KernelCache:
    for var in ("FAKE_NVCC_FAIL", "FAKE_NVCC_SLEEP", "FAKE_NVCC_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FAKE_NVCC_LOG", str(tmp_path / "compiles.log"))
    return KernelCache(tmp_path / "cache", toolchain=make_fake_toolchain(tmp_path))


def compiles(cache: KernelCache) -> int:
    log = cache.root.parent / "compiles.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


P = BatchProblem(16, 128, 6272, 128)


def test_key_names_everything_a_choice_depends_on(cache):
    key = tuning.tuning_key(P, "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain)
    for part in (f"gpu={GPU}", "family=dense", "dtype=fp16", "arch=sm90", "L=16", "M=128", "N=6272", "K=128",
                 "cutlass=4.2.0", "nvcc=12.4.131"):
        assert part in key.split("|")
    others = [tuning.tuning_key(replace(P, N=6280), "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain),
              tuning.tuning_key(P, "bf16", "sm90", gpu_name=GPU, toolchain=cache.toolchain),
              tuning.tuning_key(P, "fp16", "sm80", gpu_name=GPU, toolchain=cache.toolchain),
              tuning.tuning_key(P, "fp16", "sm90", gpu_name="Other GPU", toolchain=cache.toolchain),
              tuning.tuning_key(P, "fp16", "sm90", gpu_name=GPU,
                                toolchain=replace(cache.toolchain, nvcc_version="13.0.88")),
              tuning.tuning_key(P, "fp16", "sm90", gpu_name=GPU,
                                toolchain=replace(cache.toolchain, cutlass_version="4.3.0"))]
    assert len({key, *others}) == 7


def _record(cache, desc: KernelDesc, problem=P, gpu=GPU) -> str:
    key = tuning.tuning_key(problem, desc.dtype, "sm90", gpu_name=gpu, toolchain=cache.toolchain)
    TuningStore.beside(cache).put(key, {"desc": desc.as_dict(), "name": desc.name, "median_ms": 0.1})
    return key


def test_store_round_trip_and_best_desc(cache):
    tuned = candidates(P, "fp16", "sm90")[2]
    assert tuning.best_desc(P, "fp16", "sm90", cache=cache, gpu_name=GPU) is None
    _record(cache, tuned)
    store = TuningStore(cache.root / "tuning.json")          # a fresh reader sees it
    assert len(store.entries()) == 1
    assert tuning.best_desc(P, "fp16", "sm90", cache=cache, gpu_name=GPU) == tuned
    assert tuning.tuned_or_default(P, "fp16", "sm90", cache, gpu_name=GPU) == tuned
    # another GPU, problem or toolchain finds nothing and gets the default
    assert tuning.best_desc(P, "fp16", "sm90", cache=cache, gpu_name="Other GPU") is None
    assert tuning.tuned_or_default(replace(P, K=256), "fp16", "sm90", cache, gpu_name=GPU) == select(
        replace(P, K=256), "fp16", "sm90")
    newer = KernelCache(cache.root, toolchain=replace(cache.toolchain, nvcc_version="13.0.88"))
    assert tuning.best_desc(P, "fp16", "sm90", cache=newer, gpu_name=GPU) is None


def test_without_a_gpu_the_default_is_used(cache, monkeypatch):
    from cutlass_wsp.gpu import device

    _record(cache, candidates(P, "fp16", "sm90")[2])
    monkeypatch.setattr(device, "current_gpu_name", lambda: None)
    choices = TunedChoices.load(cache, checks=registry.checks())
    assert len(choices) == 0 and choices.lookup("dense", P, "fp16", "sm90") is None
    assert tuning.tuned_or_default(P, "fp16", "sm90", cache) == select(P, "fp16", "sm90")


def test_tuned_choices_are_read_once(cache):
    """A run's TunedChoices is a snapshot: entries written after it was taken are not seen, and looking
    one up reads no file."""
    tuned = candidates(P, "fp16", "sm90")[2]
    _record(cache, tuned)
    choices = TunedChoices.load(cache, gpu_name=GPU, checks=registry.checks())
    assert choices.lookup("dense", P, "fp16", "sm90") == tuned and choices.tuned("dense", P, "fp16", "sm90")
    other = replace(P, K=256)
    _record(cache, candidates(other, "fp16", "sm90")[1], problem=other)
    TuningStore.beside(cache).path.unlink()                   # gone: the snapshot does not care
    assert choices.lookup("dense", P, "fp16", "sm90") == tuned
    assert choices.lookup("dense", other, "fp16", "sm90") is None
    assert choices.key("dense", P, "fp16", "sm90") == tuning.tuning_key(P, "fp16", "sm90", gpu_name=GPU,
                                                                        toolchain=cache.toolchain)
    assert TunedChoices().lookup("dense", P, "fp16", "sm90") is None and TunedChoices().key("dense", P, "fp16", "sm90") is None


def test_an_entry_this_version_cannot_build_is_ignored(cache):
    d = candidates(P, "fp16", "sm90")[1]
    bad = dict(d.as_dict(), tile=[96, 128, 64])              # sm90 refuses tile M 96
    key = tuning.tuning_key(P, "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain)
    TuningStore.beside(cache).put(key, {"desc": bad})
    assert tuning.best_desc(P, "fp16", "sm90", cache=cache, gpu_name=GPU) is None
    TuningStore.beside(cache).put(key, {"desc": {"no_such_field": 1}})
    assert tuning.best_desc(P, "fp16", "sm90", cache=cache, gpu_name=GPU) is None


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"format": 99, "entries": {}}',
                                     b'{"format": 1, "entries": []}', b"\xff\xfe\x00garbage"])
def test_a_corrupt_file_reads_as_empty_and_is_replaced_on_write(cache, content):
    store = TuningStore.beside(cache)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(content)
    with pytest.warns(TuningWarning):
        assert store.entries() == {}
    with pytest.warns(TuningWarning):
        assert tuning.best_desc(P, "fp16", "sm90", cache=cache, store=TuningStore(store.path), gpu_name=GPU) is None
    with pytest.warns(TuningWarning):
        store.put("k", {"desc": {}})
    assert json.loads(store.path.read_text()) == {"format": 1, "entries": {"k": {"desc": {}}}}


def test_a_failed_write_leaves_the_old_file_and_no_temp_files(cache, monkeypatch):
    store = TuningStore.beside(cache)
    store.put("a", {"v": 1})
    before = store.path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put("b", {"v": 2})
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir() if p.name.startswith(".tuning")) == []
    assert TuningStore(store.path).entries() == {"a": {"v": 1}}


def test_writes_replace_the_file_in_one_step(cache, monkeypatch):
    """The new content is written to a temp file beside the store and moved over it with os.replace."""
    store = TuningStore.beside(cache)
    store.put("a", {"v": 1})
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((Path(src), Path(dst), json.loads(Path(src).read_text())))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.put("b", {"v": 2})
    (src, dst, content), = seen
    assert dst == store.path and src.parent == store.path.parent and src != dst
    assert content["entries"] == {"a": {"v": 1}, "b": {"v": 2}}


def test_concurrent_writers_lose_no_entries(cache):
    path = TuningStore.beside(cache).path

    def writer(i):
        s = TuningStore(path)              # each with its own lock file handle
        for j in range(10):
            s.put(f"w{i}-{j}", {"v": j})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(TuningStore(path).entries()) == 40


# ------------------------------------------------------------------------------------ selection
class FakeMeasure:
    """measure(problem, desc, budget) from a table name -> list of outcomes per call: a time in ms,
    'wrong' (VerificationError) or 'refused' (KernelError). The last outcome repeats."""

    def __init__(self, table: dict[str, list]):
        self.table = table
        self.calls: list[tuple[BatchProblem, str, float]] = []

    def __call__(self, problem, desc, budget_s):
        self.calls.append((problem, desc.name, budget_s))
        n = sum(1 for _, name, _ in self.calls if name == desc.name)
        outcomes = self.table[desc.name]
        out = outcomes[min(n, len(outcomes)) - 1]
        if out == "wrong":
            raise VerificationError(f"{desc.name}: relative error 3e-1 > 5e-3", "not timed")
        if out == "refused":
            raise KernelError(f"{desc.name} cannot run this problem: kErrorInvalidProblem")
        return Trial(desc, "ok", median_ms=float(out), iqr_ms=0.001, reps=50, rel_error=1e-4)


def test_the_fastest_verified_candidate_wins_and_is_recorded(cache):
    descs = candidates(P, "fp16", "sm90", limit=5)
    names = [d.name for d in descs]
    fake = FakeMeasure({names[0]: [0.50], names[1]: ["wrong"], names[2]: [0.30], names[3]: ["refused"],
                        names[4]: [0.20]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=5, measure=fake, gpu_name=GPU, budget_s=1.0)
    assert r.best == descs[4] and r.best_ms == pytest.approx(0.20)
    assert r.default == descs[0] and r.default_ms == pytest.approx(0.50)
    assert r.speedup_vs_default == pytest.approx(2.5)
    status = {t.desc.name: t.status for t in r.trials if t.round == 0}
    assert status == {names[0]: "ok", names[1]: "wrong", names[2]: "ok", names[3]: "error", names[4]: "ok"}
    assert r.recorded and tuning.best_desc(P, "fp16", "sm90", cache=cache, gpu_name=GPU) == descs[4]
    assert compiles(cache) == 5


def test_a_wrong_candidate_never_wins(cache):
    descs = candidates(P, "fp16", "sm90", limit=4)
    names = [d.name for d in descs]
    fake = FakeMeasure({names[0]: [0.5], names[1]: ["wrong"], names[2]: [0.4], names[3]: [0.45]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=4, measure=fake, gpu_name=GPU)
    assert r.best == descs[2]
    assert [t.status for t in r.trials if t.desc == descs[1]] == ["wrong"]
    assert sum(1 for _, n, _ in fake.calls if n == names[1]) == 1       # never re-timed


def test_a_candidate_that_fails_when_re_timed_is_out(cache):
    descs = candidates(P, "fp16", "sm90", limit=3)
    names = [d.name for d in descs]
    # names[1] is fastest at first, then produces a wrong result in the confirmation round
    fake = FakeMeasure({names[0]: [0.5], names[1]: [0.1, "wrong"], names[2]: [0.3]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=3, measure=fake, gpu_name=GPU)
    assert r.best == descs[2]
    assert {t.round for t in r.trials} == {0, 1}


def test_the_confirmation_round_decides_among_the_finalists(cache):
    descs = candidates(P, "fp16", "sm90", limit=4)
    names = [d.name for d in descs]
    # a lucky first timing (names[1]: 0.10, then 0.40) loses to a steady 0.20
    fake = FakeMeasure({names[0]: [0.5], names[1]: [0.10, 0.40], names[2]: [0.20, 0.20], names[3]: [0.9]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=4, measure=fake, gpu_name=GPU, confirm=3)
    assert r.best == descs[2] and r.best_ms == pytest.approx(0.20)
    retimed = {n for _, n, b in fake.calls[4:]}
    assert retimed == {names[1], names[2], names[0]}                   # the 3 fastest, not names[3]
    assert sum(b for _, _, b in fake.calls) == pytest.approx(tuning.DEFAULT_BUDGET_S)


def test_a_candidate_that_does_not_compile_is_skipped_and_recorded(cache, monkeypatch):
    descs = candidates(P, "fp16", "sm90", limit=3)
    monkeypatch.setenv("FAKE_NVCC_FAIL", descs[1].name)      # its name is in its source only
    fake = FakeMeasure({d.name: [0.1 * (i + 1)] for i, d in enumerate(descs)})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=3, measure=fake, gpu_name=GPU)
    failed = [t for t in r.trials if t.status == "compile_error"]
    assert [t.desc for t in failed] == [descs[1]] and "error" in failed[0].error
    assert descs[1].name not in {n for _, n, _ in fake.calls}
    assert r.best == descs[0]


def test_nothing_verified_keeps_the_default_and_records_nothing(cache):
    descs = candidates(P, "fp16", "sm90", limit=2)
    fake = FakeMeasure({descs[0].name: ["wrong"], descs[1].name: ["refused"]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=2, measure=fake, gpu_name=GPU)
    assert r.best is None and r.chosen == descs[0] and not r.recorded
    assert not TuningStore.beside(cache).path.exists()
    assert tuning.tuned_or_default(P, "fp16", "sm90", cache, gpu_name=GPU) == select(P, "fp16", "sm90")


def test_record_false_and_an_explicit_store(cache, tmp_path):
    descs = candidates(P, "fp16", "sm90", limit=2)
    fake = FakeMeasure({descs[0].name: [0.3], descs[1].name: [0.2]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=2, measure=fake, gpu_name=GPU, record=False)
    assert r.best == descs[1] and not r.recorded and not TuningStore.beside(cache).path.exists()
    elsewhere = TuningStore(tmp_path / "elsewhere" / "t.json")
    tuning.tune(P, "fp16", "sm90", cache=cache, limit=2, measure=fake, gpu_name=GPU, store=elsewhere)
    assert not TuningStore.beside(cache).path.exists()
    assert tuning.best_desc(P, "fp16", "sm90", cache=cache, store=elsewhere, gpu_name=GPU) == descs[1]


def test_tune_many_compiles_the_union_once(cache):
    probs = [BatchProblem(16, 512, 1568, 512), BatchProblem(36, 512, 1568, 512), BatchProblem(16, 512, 512, 512)]
    union = candidate_union(probs, "fp16", "sm90")
    fake = FakeMeasure({d.name: [0.1 + 0.01 * i] for i, d in enumerate(union)})
    results = tuning.tune_many(probs, "fp16", "sm90", cache=cache, measure=fake, gpu_name=GPU, budget_s=0.5)
    assert compiles(cache) == len(union)
    assert [r.problem for r in results] == probs
    for r in results:
        assert r.best == candidates(r.problem, "fp16", "sm90")[0]      # the cheapest in the fake table
        assert r.recorded
    assert len(TuningStore.beside(cache).entries()) == 3
    tuning.tune_many(probs, "fp16", "sm90", cache=cache, measure=fake, gpu_name=GPU, budget_s=0.5)
    assert compiles(cache) == len(union)                              # all cache hits the second time


def test_trial_and_result_serialise(cache):
    descs = candidates(P, "fp16", "sm90", limit=2)
    fake = FakeMeasure({descs[0].name: [0.3], descs[1].name: [0.2]})
    r = tuning.tune(P, "fp16", "sm90", cache=cache, limit=2, measure=fake, gpu_name=GPU)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["best"] == descs[1].name and KernelDesc.from_dict(d["best_desc"]) == descs[1]
    assert d["speedup_vs_default"] == pytest.approx(1.5)
    with pytest.raises(ValueError):
        Trial(descs[0], "ok")
    with pytest.raises(ValueError):
        Trial(descs[0], "fast")


# ------------------------------------------------------------------------- bench/tune_dense.py
@pytest.fixture(scope="module")
def bench():
    from bench_scripts import load_bench_script

    return load_bench_script("tune_dense")


def test_bench_shapes_are_the_24_problems(bench):
    got = bench.shapes(["vgg16", "resnet18"], [4, 6], 32, "fp16")
    assert [s.problem for s in got] == PROBLEMS
    first = got[0]
    assert (first.c, first.n, first.H, first.p, first.T) == (64, 64, 224, 4, 32 * 112 * 112)
    assert all(s.problem.N >= s.T and s.problem.N % 8 == 0 for s in got)


def test_bench_compile_only_builds_the_union_once(bench, cache, capsys):
    all_shapes = bench.shapes(["vgg16", "resnet18"], [4, 6], 32, "fp16")
    assert bench.compile_only(all_shapes, "fp16", "sm90", 132, cache, jobs=2) == 0
    union = candidate_union(PROBLEMS, "fp16", "sm90")
    assert compiles(cache) == len(union)
    out = capsys.readouterr().out
    assert f"compiling {len(union)} distinct kernels for 24 shapes" in out and f"built {len(union)}" in out


def test_bench_summary_checks_the_targets(bench):
    rows = [dict(label="a", p=4, ratio_vs_cublas=1.2, floor_ms=0.5, pct_of_floor=90.0),
            dict(label="b", p=4, ratio_vs_cublas=0.9, floor_ms=0.01, pct_of_floor=30.0),   # floor < 50 us
            dict(label="c", p=6, ratio_vs_cublas=1.1, floor_ms=0.06, pct_of_floor=80.0),
            dict(label="d", p=6, status="error")]
    s = bench.summarize(rows)
    assert s["measured"] == 3 and s["shapes"] == 4
    assert s["geomean_ratio_vs_cublas"] == pytest.approx((1.2 * 0.9 * 1.1) ** (1 / 3))
    assert s["min_ratio_vs_cublas"] == 0.9 and s["min_ratio_shape"] == "b p=4"
    assert s["floor_gated_shapes"] == 2 and s["under_pct_of_floor"] == ["c p=6 (80%)"]
    assert s["targets"] == {"geomean_ge_1.05": True, "min_ge_0.95": False,       # geomean 1.059
                            "pct_floor_ge_85_where_floor_ge_50us": False}


def test_bench_config_column(bench):
    d = default_desc("dense", "fp16", "sm90", tile=(256, 128, 64), cluster=(2, 1, 1),
                     extra=(("scheduler", "streamk"), ("splits", 2)))
    assert bench.short_config(d) == "256x128x64 coop c2x1 splitk2"
    assert bench.short_config(default_desc("dense", "fp16", "sm90", tile=(64, 256, 64),
                                           kernel_schedule="tma_ws_pingpong", epilogue_schedule="nosmem")) \
        == "64x256x64 pp e:nosmem"
