"""Accuracy proxies (accuracy.py), per-layer weights and calibration inputs from files (layer_inputs.py),
measured drops (accuracy_drops.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp import accuracy
from cutlass_wsp.accuracy_drops import AccuracyDrops
from cutlass_wsp.errors import InputError
from cutlass_wsp.layer_inputs import ActivationFile, WeightFile, key_candidates
from cutlass_wsp.layers import Layer, resolve_layers
from cutlass_wsp.pruning import prune
from cutlass_wsp.weights import to_winograd
from cutlass_wsp.winograd import direct_conv2d, filter_transform

LAYER = Layer("toy", "toy.conv", 8, 16, 12, 10)


def _probe(seed=0, d=None, p=4):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((LAYER.n, LAYER.c, 3, 3))
    d = accuracy.random_activations(LAYER) if d is None else d
    return g, d, accuracy.LayerProbe(filter_transform(g, p - 2), d, p)


# ------------------------------------------------------------------------------------- calibration
def test_random_activations_are_rectified_cropped_and_seeded_by_layer_name():
    big = Layer("vgg16", "vgg16.conv1_2", 64, 64, 224, 224)
    d = accuracy.random_activations(big)
    assert d.shape == (2, 64, 28, 28) and d.dtype == np.float32 and (d >= 0).all() and (d > 0).mean() > 0.4
    assert np.array_equal(d, accuracy.random_activations(big))
    other = Layer("vgg16", "vgg16.conv2_1", 64, 64, 224, 224)
    assert not np.array_equal(d, accuracy.random_activations(other))
    assert accuracy.random_activations(LAYER, images=3, size=8).shape == (3, 8, 8, 8)
    assert accuracy.random_activations(LAYER, size=64).shape == (2, 8, 12, 10)     # never larger than the map


def test_crop_takes_the_first_images_and_the_centre():
    d = np.arange(4 * 1 * 6 * 6, dtype=np.float64).reshape(4, 1, 6, 6)
    c = accuracy.crop(d, images=2, size=2)
    assert c.shape == (2, 1, 2, 2) and c.dtype == np.float32
    np.testing.assert_array_equal(c[0, 0], d[0, 0, 2:4, 2:4])
    with pytest.raises(InputError, match="calibration images 0"):
        accuracy.crop(d, images=0)


# ------------------------------------------------------------------------------------------ proxies
@pytest.mark.parametrize("p", [4, 6])
def test_the_dense_reference_is_the_layer_itself(p):
    g, d, probe = _probe(p=p)
    np.testing.assert_allclose(probe.reference, direct_conv2d(d, g), rtol=2e-4, atol=2e-4 * np.abs(probe.reference).max())


def test_output_error_is_zero_for_nothing_pruned_and_one_for_everything_pruned():
    _, _, probe = _probe()
    assert probe.output_error(np.ones(probe.W.shape, bool)) == pytest.approx(0.0, abs=1e-7)
    assert probe.output_error(np.zeros(probe.W.shape, bool)) == pytest.approx(1.0)


def test_output_error_is_the_relative_error_of_the_masked_layer():
    g, d, probe = _probe()
    pr = prune(probe.W, "wsp-r", 0.5)
    out = accuracy.LayerProbe(np.where(pr.mask, probe.W, 0), d, 4).reference
    want = np.linalg.norm(out - direct_conv2d(d, g)) / np.linalg.norm(direct_conv2d(d, g))
    assert probe.output_error(pr.mask) == pytest.approx(want, rel=1e-3)


def test_proxy_carries_energy_error_and_counts():
    _, _, probe = _probe()
    q = probe.proxy("wsp-c", 0.5, "unbalanced")
    pr = prune(probe.W, "wsp-c", 0.5, balance="unbalanced")
    assert q.energy_retained == pytest.approx(pr.energy_retained)
    assert q.kept_per_position == tuple(pr.kept_per_position) and sum(q.kept_per_position) == 64
    assert 0 < q.output_error and q.achieved_ratio == pytest.approx(0.5)
    assert q.to_dict()["pattern"] == "wsp-c"


def test_bwsp_on_a_layer_with_one_high_energy_position_loses_on_both_proxies():
    """One Winograd position holds most of the energy: the balanced mask must cut 70% of its rows, the
    unbalanced one (one threshold per layer) keeps them and prunes elsewhere."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 32, 32)).astype(np.float32)
    W[5] *= 10
    probe = accuracy.LayerProbe(W, rng.random((2, 32, 12, 12)).astype(np.float32), 4)
    bal, unbal = probe.proxy("wsp-r", 0.7, "balanced"), probe.proxy("wsp-r", 0.7, "unbalanced")
    assert unbal.kept_per_position[5] == 32 and bal.kept_per_position[5] == 10
    assert unbal.energy_retained > bal.energy_retained + 0.2
    assert unbal.output_error < bal.output_error - 0.2


def test_bad_probe_inputs_are_one_line():
    with pytest.raises(InputError, match="pass W\\[16, n, c\\]"):
        accuracy.LayerProbe(np.ones((9, 2, 2)), np.ones((1, 2, 4, 4)), 4)
    with pytest.raises(InputError, match="c=2"):
        accuracy.LayerProbe(np.ones((16, 2, 2)), np.ones((1, 3, 4, 4)), 4)


# --------------------------------------------------------------------------------------- weight files
def test_weights_are_found_by_full_short_or_torchvision_name(tmp_path):
    net = resolve_layers("vgg16")
    c12, c42 = net[1], net[8]
    g12 = np.random.default_rng(0).standard_normal((64, 64, 3, 3))
    W42 = np.random.default_rng(1).standard_normal((16, 512, 512)).astype(np.float32)
    np.savez(tmp_path / "w.npz", **{"module.features.2.weight": g12, "conv4_2": W42})
    wf = WeightFile(tmp_path / "w.npz")
    np.testing.assert_allclose(wf.weights(c12, 4), filter_transform(g12, 2), rtol=1e-6)
    np.testing.assert_array_equal(wf.weights(c42, 4), W42)
    with pytest.raises(InputError, match="has no weights for vgg16.conv5_1 .*store them under one of vgg16.conv5_1, "
                                         "conv5_1, features.24"):
        wf.weights(net[10], 4)
    with pytest.raises(InputError, match="this layer needs n=512, c=256"):
        WeightFile(tmp_path / "w.npz").weights(Layer("vgg16", "vgg16.conv4_2", 256, 512, 28, 28), 4)
    assert "layer1.0.conv1.weight" in key_candidates(resolve_layers("resnet18")[0], ".weight")


def test_a_npy_file_serves_one_layer_only(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((16, 16, 8), np.float32))
    wf = WeightFile(tmp_path / "w.npy")
    wf.file.require_single_layer([LAYER])
    assert wf.weights(LAYER, 4).shape == (16, 16, 8)
    with pytest.raises(InputError, match="holds one array but 2 layers need weights"):
        wf.file.require_single_layer([LAYER, LAYER])


def test_weight_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        WeightFile(tmp_path / "none.npz")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(InputError, match="unknown weights-file type"):
        WeightFile(tmp_path / "w.txt")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="numpy could not read it"):
        WeightFile(tmp_path / "junk.npz")


def test_to_winograd_is_the_loaders_conversion():
    g = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(to_winograd(g, 4, "g"), filter_transform(g, 2), rtol=1e-6)
    with pytest.raises(InputError, match="g has shape"):
        to_winograd(np.ones((2, 2)), 4, "g")


# --------------------------------------------------------------------------------------- activations
def test_activations_by_layer_name_and_missing_layers_get_none(tmp_path):
    net = resolve_layers("resnet18")
    a = np.random.default_rng(0).random((3, 64, 56, 56)).astype(np.float32)
    np.savez(tmp_path / "a.npz", **{"layer1.0.conv1": a, "layer1.0.conv2.input": a[0]})
    af = ActivationFile(tmp_path / "a.npz")
    np.testing.assert_array_equal(af.activations(net[0]), a)
    assert af.activations(net[1]).shape == (1, 64, 56, 56)        # one [c, H, W] image
    assert af.activations(net[2]) is None
    np.savez(tmp_path / "b.npz", **{"layer1.0.conv1": a.transpose(0, 2, 3, 1)})
    with pytest.raises(InputError, match="takes NCHW input with c=64"):
        ActivationFile(tmp_path / "b.npz").activations(net[0])


# ------------------------------------------------------------------------------------------ drops
def _csv(tmp_path, text):
    path = tmp_path / "acc.csv"
    path.write_text(text)
    return path


def test_drops_are_read_by_layer_pattern_ratio_and_balance(tmp_path):
    net = resolve_layers("vgg16")
    path = _csv(tmp_path, "layer,pattern,ratio,balance,drop\nconv4_2,wsp-r,0.7,balanced,0.42\n"
                          "vgg16.conv4_2,wsp-c-fused,70%,unbalanced,-0.1\nconv5_1,fp,0.7,,1.5\n")
    drops = AccuracyDrops(path, net)
    assert drops.get(net[8], "wsp-r", 0.7, "balanced") == 0.42
    assert drops.get(net[8], "wsp-c", 0.7, "unbalanced") == -0.1         # wsp-c-fused is WSP-C's pruning
    assert drops.get(net[10], "fp", 0.7, None) == 1.5
    assert drops.get(net[8], "wsp-r", 0.7, "unbalanced") is None


@pytest.mark.parametrize("text, match", [
    ("layer,pattern,ratio,drop\n", "no column 'balance'"),
    ("layer,pattern,ratio,balance,drop\nconv9_9,wsp-r,0.7,balanced,1\n", "row 1: no layer 'conv9_9'"),
    ("layer,pattern,ratio,balance,drop\nconv4_2,wsp-r,0.7,,1\n", "balance '' for wsp-r"),
    ("layer,pattern,ratio,balance,drop\nconv4_2,wsp-r,0.7,balanced,lots\n", "drop 'lots' is not a number"),
    ("layer,pattern,ratio,balance,drop\nconv4_2,wsp-r,1.5,balanced,1\n", "outside 0 < ratio < 1"),
    ("layer,pattern,ratio,balance,drop\nconv4_2,wsp-r,0.7,balanced,1\nconv4_2,wsp-r,0.7,balanced,2\n",
     "row 2: a second drop"),
])
def test_bad_drop_files_are_one_line(tmp_path, text, match):
    with pytest.raises(InputError, match=match) as e:
        AccuracyDrops(_csv(tmp_path, text), resolve_layers("vgg16"))
    assert "\n" not in str(e.value)


def test_a_torch_file_without_torch_is_one_line(tmp_path):
    import importlib.util

    from cutlass_wsp.errors import Unsupported

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: the no-torch message cannot be shown")
    (tmp_path / "m.pt").write_bytes(b"\x80\x02")
    with pytest.raises(Unsupported, match="install torch to read .pt files"):
        WeightFile(tmp_path / "m.pt")
    with pytest.raises(InputError, match="unknown activations-file type '.pt'"):
        ActivationFile(tmp_path / "m.pt")


def test_a_torch_state_dict_is_read_through_torch_load(tmp_path, monkeypatch):
    """Without torch installed: a stand-in torch module serves torch.load, so the reading of a torchvision
    checkpoint (wrapped in 'state_dict', DataParallel's 'module.' prefix, non-tensor entries) is checked."""
    import sys
    import types

    class Tensor:
        def __init__(self, a):
            self.a = np.asarray(a)

        def detach(self):
            return self

        def to(self, dtype):
            return Tensor(self.a.astype(dtype))

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    net = resolve_layers("resnet18")
    g = np.random.default_rng(4).standard_normal((64, 64, 3, 3))
    saved = {"state_dict": {"module.layer1.0.conv1.weight": Tensor(g), "module.fc.bias": Tensor(np.zeros(10)),
                            "epoch": 90}}
    calls = []

    def load(path, map_location=None, weights_only=None):
        calls.append((path, map_location, weights_only))
        return saved

    fake = types.SimpleNamespace(load=load, float32=np.float32, is_tensor=lambda v: isinstance(v, Tensor))
    monkeypatch.setitem(sys.modules, "torch", fake)
    (tmp_path / "r18.pth").write_bytes(b"\x80\x02")
    wf = WeightFile(tmp_path / "r18.pth")
    assert calls == [(str(tmp_path / "r18.pth"), "cpu", True)]
    assert sorted(wf.file.keys) == ["module.fc.bias", "module.layer1.0.conv1.weight"]
    np.testing.assert_allclose(wf.weights(net[0], 4), filter_transform(g.astype(np.float32), 2), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(InputError, match="has no weights for resnet18.layer1.0.conv2"):
        wf.weights(net[1], 4)
    saved.clear()
    saved["x"] = 1
    fake.load = lambda *a, **k: [1, 2]
    with pytest.raises(InputError, match="holds a list, not a state_dict"):
        WeightFile(tmp_path / "r18.pth")
