"""Synthetic He-initialised Winograd weights and loading weights from .npy/.npz/.pt files."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.layers import network
from cutlass_wsp.weights import he_winograd_weights, load_weights
from cutlass_wsp.winograd import direct_conv2d, filter_transform, input_transform, output_transform

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("p", [4, 6, 8])
def test_he_weights_shape_dtype_seed(p):
    W = he_winograd_weights((32, 16), p=p, seed=3)
    assert W.shape == (p * p, 32, 16) and W.dtype == np.float32
    np.testing.assert_array_equal(W, he_winograd_weights((32, 16), p=p, seed=3))
    assert not np.array_equal(W, he_winograd_weights((32, 16), p=p, seed=4))


def test_he_weights_from_layer():
    layer = network("resnet18")[4]            # 128 → 128
    assert he_winograd_weights(layer, p=6).shape == (36, 128, 128)


def test_he_weights_std_and_position_magnitudes():
    n, c = 256, 128
    W = he_winograd_weights((n, c), p=4, seed=0).astype(np.float64)
    # F(2,3): G's first row is [1, 0, 0], so position 0 is the spatial tap g[:, :, 0, 0] itself
    assert W[0].std() == pytest.approx(np.sqrt(2 / (9 * c)), rel=0.02)
    std = W.std(axis=(1, 2)).reshape(4, 4)
    # inner positions average 9 taps with weight 1/4: variance 9/16 of a corner's
    assert std[1, 1] / std[0, 0] == pytest.approx(0.75, rel=0.03)
    assert std.max() / std.min() > 1.2


def test_he_weights_bad_layer():
    with pytest.raises(InputError, match="n and c"):
        he_winograd_weights((0, 4), p=4)
    with pytest.raises(InputError, match=r"\(n, c\)"):
        he_winograd_weights("vgg", p=4)
    with pytest.raises(InputError, match="p=5"):
        he_winograd_weights((4, 4), p=5)


def test_load_spatial_npy_is_transformed_and_convolves(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((8, 5, 3, 3))
    np.save(tmp_path / "g.npy", g)
    W = load_weights(tmp_path / "g.npy", p=6)
    assert W.shape == (36, 8, 5) and W.dtype == np.float32
    # the loaded weights run a real Winograd conv that matches the direct conv of g
    d = rng.standard_normal((1, 5, 9, 9))
    Y = np.matmul(W.astype(np.float64), input_transform(d, 4))
    np.testing.assert_allclose(output_transform(Y, 4, 1, 9, 9), direct_conv2d(d, g), rtol=1e-4, atol=1e-4)  # W is fp32


def test_load_winograd_npy_passthrough(tmp_path):
    W0 = np.random.default_rng(1).standard_normal((16, 8, 4)).astype(np.float32)
    np.save(tmp_path / "w.npy", W0)
    np.testing.assert_array_equal(load_weights(tmp_path / "w.npy", p=4), W0)
    with pytest.raises(InputError) as e:               # a p=4 array read as p=6
        load_weights(tmp_path / "w.npy", p=6)
    msg = str(e.value)
    assert "(16, 8, 4)" in msg and "[n, c, 3, 3]" in msg and "[36, n, c]" in msg


def test_load_npz_keys(tmp_path):
    rng = np.random.default_rng(2)
    g1, g2 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((6, 4, 3, 3))
    np.savez(tmp_path / "m.npz", conv1=g1, conv2=g2)
    W = load_weights(tmp_path / "m.npz", "conv2", p=4)
    np.testing.assert_allclose(W, filter_transform(g2, 2), rtol=1e-6)
    with pytest.raises(InputError) as e:
        load_weights(tmp_path / "m.npz", p=4)
    assert "2 arrays" in str(e.value) and "conv1" in str(e.value) and "conv2" in str(e.value)
    with pytest.raises(InputError, match="no array 'conv3'"):
        load_weights(tmp_path / "m.npz", "conv3", p=4)
    np.savez(tmp_path / "one.npz", only=g1)
    assert load_weights(tmp_path / "one.npz", p=4).shape == (16, 4, 3)


def test_load_expect_checks_layer(tmp_path):
    np.save(tmp_path / "g.npy", np.ones((4, 3, 3, 3)))
    assert load_weights(tmp_path / "g.npy", p=4, expect=(4, 3)).shape == (16, 4, 3)
    with pytest.raises(InputError, match="n=4, c=3.*needs n=64, c=3"):
        load_weights(tmp_path / "g.npy", p=4, expect=(64, 3))


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (4, 3), (17, 4, 3), (2, 16, 4, 3)])
def test_load_wrong_shapes(tmp_path, shape):
    np.save(tmp_path / "bad.npy", np.ones(shape))
    with pytest.raises(InputError) as e:
        load_weights(tmp_path / "bad.npy", p=4)
    assert str(shape) in str(e.value) and "[n, c, 3, 3]" in str(e.value) and "[16, n, c]" in str(e.value)


def test_load_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_weights(tmp_path / "none.npy", p=4)
    (tmp_path / "w.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown weights-file type"):
        load_weights(tmp_path / "w.txt", p=4)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="numpy could not read it"):
        load_weights(tmp_path / "junk.npy", p=4)
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="dtype"):
        load_weights(tmp_path / "s.npy", p=4)
    np.save(tmp_path / "g.npy", np.ones((4, 3, 3, 3)))
    with pytest.raises(InputError, match="key='x' does not apply"):
        load_weights(tmp_path / "g.npy", "x", p=4)


@pytest.mark.skipif(HAVE_TORCH, reason="torch is installed: the no-torch message cannot be shown")
def test_load_pt_without_torch(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"\x80\x02")
    with pytest.raises(Unsupported, match="install torch to read .pt files"):
        load_weights(tmp_path / "m.pt", p=4)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_load_pt_state_dict(tmp_path):
    import torch

    g = torch.randn(8, 4, 3, 3)
    sd = {"features.0.weight": g, "features.0.bias": torch.zeros(8), "fc.weight": torch.randn(10, 8)}
    torch.save(sd, tmp_path / "m.pt")
    W = load_weights(tmp_path / "m.pt", p=4)   # the only 3×3 conv weight is picked without a key
    np.testing.assert_allclose(W, filter_transform(g.numpy().astype(np.float64), 2), rtol=1e-6)
    sd["features.2.weight"] = torch.randn(8, 8, 3, 3)
    torch.save(sd, tmp_path / "m2.pth")
    with pytest.raises(InputError, match="features.0.weight, features.2.weight"):
        load_weights(tmp_path / "m2.pth", p=4)
    assert load_weights(tmp_path / "m2.pth", "features.2.weight", p=4).shape == (16, 8, 8)
    with pytest.raises(InputError, match=r"\(10, 8\)"):
        load_weights(tmp_path / "m2.pth", "fc.weight", p=4)
