"""pointins.compat.spconv against dense PyTorch convolutions (always) and spconv 2.3.8 itself (when installed).

Dense references: a submanifold conv is ``conv3d`` on the dense grid (zeros off the voxels, padding K // 2 *
dilation) read at the voxels; a strided conv is ``conv3d`` with its stride/padding read at the active outputs; the
inverse conv is ``conv_transpose3d`` read at the strided conv's inputs. spconv has no CPU backward, so gradients are
checked against the dense references only.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import pointins.compat.spconv as ours

try:
    import spconv.pytorch as spconv  # type: ignore[no-redef]
except Exception:  # (spconv is a test-only dependency: skip its comparisons when absent)
    spconv = None

needs_spconv = pytest.mark.skipif(spconv is None, reason="spconv (test-only peer) not installed")


@pytest.fixture
def one_thread():
    """spconv 2.3.8's CPU rulebook races with more than one thread (repeated calls differ); compare at 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cloud(n, shape, batch=2, channels=4, seed=0, dtype=torch.float32):
    """Unique random voxels of ``batch`` samples in ``shape``; features (N, channels)."""
    g = torch.Generator().manual_seed(seed)
    nd = len(shape)
    b = torch.randint(0, batch, (3 * n,), generator=g)
    c = torch.stack([torch.randint(0, s, (3 * n,), generator=g) for s in shape], 1)
    idx = torch.unique(torch.cat([b[:, None], c], 1), dim=0)
    idx = idx[torch.randperm(idx.shape[0], generator=g)[:n]].to(torch.int32)  # any order, as a loader gives
    feat = torch.randn(idx.shape[0], channels, generator=g, dtype=dtype)
    assert nd == idx.shape[1] - 1
    return feat, idx


def dense_in(feat, idx, shape, batch):
    x = feat.new_zeros((batch, feat.shape[1], *shape))
    x[(idx[:, 0].long(), slice(None), *idx[:, 1:].long().unbind(1))] = feat
    return x


def at(dense, idx):
    """Rows of a dense (B, C, *spatial) output at ``idx``."""
    return dense.movedim(1, -1)[(idx[:, 0].long(), *idx[:, 1:].long().unbind(1))]


def dense_weight(layer):
    nd = layer.ndim
    return layer.weight.permute(0, nd + 1, *range(1, nd + 1))  # (Cout, Cin, *K)


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@pytest.mark.parametrize("nd,ks,dil", [(3, 3, 1), (3, 5, 1), (3, 3, 2), (3, (1, 3, 3), 1), (3, (3, 1, 5), 2),
                                       (2, 3, 1), (1, 5, 1)])  # fmt: skip
def test_subm_equals_dense_conv_forward_and_backward(nd, ks, dil):
    shape = [12, 9, 10][:nd] if nd > 1 else [40]
    feat, idx = cloud(300 if nd == 3 else 60, shape, channels=5, seed=nd)
    layer = getattr(ours, f"SubMConv{nd}d")(5, 7, ks, dilation=dil, indice_key="s").double()
    f = feat.double().requires_grad_(True)
    y = layer(ours.SparseConvTensor(f, idx, shape, 2))
    assert torch.equal(y.indices, idx) and y.spatial_shape == shape
    k = layer.kernel_size
    pad = [kk // 2 * d for kk, d in zip(k, layer.dilation, strict=True)]
    fd = f.detach().clone().requires_grad_(True)
    w = dense_weight(layer).detach().clone().requires_grad_(True)
    ref = at(CONV[nd](dense_in(fd, idx, shape, 2), w, layer.bias.detach(), padding=pad, dilation=layer.dilation), idx)
    torch.testing.assert_close(y.features, ref)
    g = torch.randn_like(ref)
    y.features.backward(g)
    ref.backward(g)
    torch.testing.assert_close(f.grad, fd.grad)
    torch.testing.assert_close(layer.weight.grad.permute(0, nd + 1, *range(1, nd + 1)), w.grad)


@pytest.mark.parametrize("ks,st,pad,dil", [(2, 2, 0, 1), (3, 2, 1, 1), (3, 2, 0, 1), (3, 1, 1, 1), (3, 3, 2, 2),
                                           ((2, 3, 1), (2, 1, 1), (0, 1, 0), 1)])  # fmt: skip
def test_strided_and_inverse_equal_dense_convs(ks, st, pad, dil):
    shape = [13, 10, 11]
    feat, idx = cloud(250, shape, channels=3, seed=5)
    down = ours.SparseConv3d(3, 6, ks, stride=st, padding=pad, dilation=dil, indice_key="d").double()
    up = ours.SparseInverseConv3d(6, 2, ks, indice_key="d").double()
    f = feat.double().requires_grad_(True)
    x = ours.SparseConvTensor(f, idx, shape, 2)
    y = down(x)
    z = up(y)
    assert torch.equal(z.indices, idx) and z.spatial_shape == shape
    fd = f.detach().clone().requires_grad_(True)
    wd = dense_weight(down).detach().clone().requires_grad_(True)
    dense_y = CONV[3](dense_in(fd, idx, shape, 2), wd, down.bias.detach(), stride=down.stride, padding=down.padding,
                      dilation=down.dilation)  # fmt: skip
    assert list(dense_y.shape[2:]) == y.spatial_shape
    # the active outputs: exactly the sites some input reaches
    reach = CONV[3](dense_in(torch.ones(len(idx), 1, dtype=torch.float64), idx, shape, 2),
                    torch.ones(1, 1, *down.kernel_size, dtype=torch.float64), stride=down.stride, padding=down.padding,
                    dilation=down.dilation)  # fmt: skip
    active = reach[:, 0].nonzero()
    assert sorted(map(tuple, y.indices.tolist())) == sorted(map(tuple, active.tolist()))
    torch.testing.assert_close(y.features, at(dense_y, y.indices))
    # inverse = conv_transpose of the same geometry, read at the strided conv's inputs (zeros off its outputs)
    wu = up.weight.detach().permute(4, 0, 1, 2, 3)  # (Cin=6, Cout=2, *K) for conv_transpose
    yd = dense_in(y.features.detach(), y.indices, y.spatial_shape, 2)
    outpad = [s - ((o - 1) * stt - 2 * p + d * (k - 1) + 1) for s, o, stt, p, d, k in
              zip(shape, y.spatial_shape, down.stride, down.padding, down.dilation, down.kernel_size,
                  strict=True)]  # fmt: skip
    ref_z = CONVT[3](yd, wu, up.bias.detach(), stride=down.stride, padding=down.padding, dilation=down.dilation,
                     output_padding=outpad)  # fmt: skip
    torch.testing.assert_close(z.features, at(ref_z, idx))
    g = torch.randn_like(y.features)
    y.features.backward(g, retain_graph=True)
    dense_y.backward(dense_in(g, y.indices, y.spatial_shape, 2))
    torch.testing.assert_close(f.grad, fd.grad)
    torch.testing.assert_close(down.weight.grad.permute(0, 4, 1, 2, 3), wd.grad)


def test_tensor_api():
    feat, idx = cloud(50, [6, 7, 8], channels=3)
    x = ours.SparseConvTensor(feat, idx, [6, 7, 8], 2)
    d = x.dense()
    assert d.shape == (2, 3, 6, 7, 8) and torch.equal(at(d, idx), feat)
    assert torch.equal(x.dense(channels_first=False).movedim(-1, 1), d)
    y = ours.SparseConvTensor.from_dense(x.dense(channels_first=False))
    assert sorted(map(tuple, y.indices.tolist())) == sorted(map(tuple, idx.tolist())) and y.batch_size == 2
    r = x.replace_feature(feat * 2)
    assert r.indice_dict is x.indice_dict and torch.equal(r.indices, idx) and r.spatial_size == 6 * 7 * 8
    assert torch.equal((x + r).features, feat * 3) and torch.equal(x.minus().features, -feat)
    with pytest.raises(ValueError, match="replace_feature"):
        x.features = feat
    with pytest.raises(ValueError, match="one row per voxel"):
        x.replace_feature(feat[:3])
    s = x.select_by_index(torch.arange(10))
    assert s.features.shape == (10, 3) and s.indice_dict == {}


def test_sequential_routes_plain_modules_to_features_and_caches_maps():
    feat, idx = cloud(200, [10, 10, 10], channels=4)
    net = ours.SparseSequential(ours.SubMConv3d(4, 8, 3, indice_key="a"), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                ours.SubMConv3d(8, 8, 3, indice_key="a"))  # fmt: skip
    x = ours.SparseConvTensor(feat, idx, [10, 10, 10], 2)
    y = net(x)
    assert list(x.indice_dict) == ["a"] and y.indice_dict is x.indice_dict
    h = torch.relu(net[1](net[0](x).features))
    torch.testing.assert_close(y.features, net[3](x.replace_feature(h)).features)
    assert len(net) == 4 and isinstance(net[-1], ours.SubMConv3d) and ours.modules.is_spconv_module(net[0])
    same = ours.SparseSequential(ours.Identity(), ours.SubMConv3d(4, 4, 3, algo=ours.ConvAlgo.Native))(x)
    assert torch.equal(same.indices, idx)  # spconv's Identity and ConvAlgo exist (Pointcept's SpUNet uses them)
    assert not ours.modules.is_spconv_module(net[1])


def test_errors_name_the_problem():
    feat, idx = cloud(20, [5, 5, 5], channels=2)
    conv = ours.SubMConv3d(2, 2, 3)
    with pytest.raises(ValueError, match="outside spatial_shape"):
        conv(ours.SparseConvTensor(feat, idx, [5, 5, 4], 2))
    with pytest.raises(ValueError, match="batch_size"):
        conv(ours.SparseConvTensor(feat, idx, [5, 5, 5], 1))
    dup = torch.cat([idx, idx[:1]])
    with pytest.raises(ValueError, match="same voxel more than once"):
        conv(ours.SparseConvTensor(torch.cat([feat, feat[:1]]), dup, [5, 5, 5], 2))
    with pytest.raises(ValueError, match="input channels"):
        ours.SubMConv3d(3, 2, 3)(ours.SparseConvTensor(feat, idx, [5, 5, 5], 2))
    with pytest.raises(ValueError, match="no kernel map under indice_key"):
        ours.SparseInverseConv3d(2, 2, 3, indice_key="zz")(ours.SparseConvTensor(feat, idx, [5, 5, 5], 2))
    x = ours.SparseConvTensor(feat, idx, [5, 5, 5], 2)
    ours.SubMConv3d(2, 2, 3, indice_key="k")(x)
    with pytest.raises(ValueError, match="same kernel size"):
        ours.SubMConv3d(2, 2, 5, indice_key="k")(x)
    with pytest.raises(ValueError, match="submanifold map"):
        ours.SparseInverseConv3d(2, 2, 3, indice_key="k")(x)
    with pytest.raises(ValueError, match="groups"):
        ours.SubMConv3d(2, 2, 3, groups=2)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        ours.SparseConvTensor(feat, idx[:, :3], [5, 5, 5], 2)


def test_spconv1_weight_layout_loads():
    conv = ours.SubMConv3d(3, 5, 3)
    w = torch.randn(3, 3, 3, 3, 5)  # spconv 1.x: (*K, Cin, Cout)
    conv.load_state_dict({"weight": w, "bias": torch.zeros(5)})
    assert torch.equal(conv.weight, w.permute(4, 0, 1, 2, 3))
    one = ours.SubMConv3d(3, 5, 1, bias=False)  # a 1x1 conv keeps computing features @ W (in, out)
    w1 = torch.randn(1, 1, 1, 3, 5)
    one.load_state_dict({"weight": w1})
    feat, idx = cloud(30, [4, 4, 4], channels=3)
    torch.testing.assert_close(one(ours.SparseConvTensor(feat, idx, [4, 4, 4], 2)).features, feat @ w1.reshape(3, 5))


def test_install_resolves_spconv_pytorch_in_a_fresh_process():
    code = ("import sys, pointins.compat as c; print(sorted(c.install())); import spconv.pytorch as sp; "
            "from spconv.pytorch import SubMConv3d; import spconv; "
            "print(sp.__name__, SubMConv3d.__module__, spconv.pytorch is sp, "
            "sp.modules.is_spconv_module(SubMConv3d(1, 1, 3)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert "spconv" in out[0] and "spconv.pytorch" in out[0]
    assert out[1] == "pointins.compat.spconv pointins.compat.spconv.conv True True"


# --- spconv itself ---------------------------------------------------------------------------------------------


def _both(theirs, mine, feat, idx, shape, batch=2):
    """Forward of the same input through spconv's network and ours (no grad): (theirs, ours) SparseConvTensors."""
    with torch.no_grad():
        return (theirs(spconv.SparseConvTensor(feat, idx, shape, batch)),
                mine(ours.SparseConvTensor(feat, idx, shape, batch)))  # fmt: skip


def _pair(build, seed=0):
    """The same network from spconv and from ours, ours loading spconv's state_dict unchanged (strict)."""
    torch.manual_seed(seed)
    theirs = build(spconv)
    mine = build(ours)
    mine.load_state_dict(theirs.state_dict(), strict=True)
    # train mode: spconv 2.3.8's CPU build refuses a biased conv in eval mode ("cpu don't support act and bias":
    # eval fuses the bias into the kernel); compare under no_grad instead (its CPU build has no backward either)
    return theirs, mine


@needs_spconv
@pytest.mark.parametrize("ks,dil", [(3, 1), (5, 1), (3, 2), ((1, 3, 3), 1)])
def test_subm_matches_spconv(one_thread, ks, dil):
    feat, idx = cloud(2000, [40, 30, 20], channels=16, seed=1)
    a, b = _both(*_pair(lambda m: m.SubMConv3d(16, 32, ks, dilation=dil, indice_key="x")), feat, idx, [40, 30, 20])
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(b.features, a.features, atol=1e-5, rtol=1e-5)


def test_1x1_convs_read_the_weight_as_spconv_does():
    """spconv 2.x multiplies a 1x1 conv's features by weight.view(in, out) (its conv1x1 path), not by the
    (out, 1, 1, 1, in) layout's natural (in, out) transpose; checkpoints mean that, so ours does the same."""
    feat, idx = cloud(100, [6, 6, 6], channels=3)
    for layer in (ours.SubMConv3d(3, 5, 1, padding=1, bias=False), ours.SparseConv3d(3, 5, 1, bias=False)):
        y = layer(ours.SparseConvTensor(feat, idx, [6, 6, 6], 2))
        assert torch.equal(y.indices, idx)
        torch.testing.assert_close(y.features, feat @ layer.weight.detach().reshape(3, 5))


@needs_spconv
@pytest.mark.parametrize("k", [1, (1, 1, 1)])
def test_1x1_matches_spconv(one_thread, k):
    feat, idx = cloud(800, [20, 20, 20], channels=6, seed=7)
    for build in (lambda m: m.SubMConv3d(6, 10, k, padding=1, bias=True), lambda m: m.SparseConv3d(6, 10, k)):
        a, b = _both(*_pair(build), feat, idx, [20, 20, 20])
        assert torch.equal(a.indices, b.indices)
        torch.testing.assert_close(b.features, a.features, atol=1e-5, rtol=1e-5)


@needs_spconv
@pytest.mark.parametrize("ks,st,pad", [(2, 2, 0), (3, 2, 1), (3, 1, 0), ((3, 2, 3), (2, 2, 1), (1, 0, 1))])
def test_strided_and_inverse_match_spconv_index_for_index(one_thread, ks, st, pad):
    feat, idx = cloud(3000, [50, 40, 30], channels=8, seed=2)

    def build(m):
        return m.SparseSequential(m.SparseConv3d(8, 16, ks, stride=st, padding=pad, indice_key="d"),
                                  m.SparseInverseConv3d(16, 4, ks, indice_key="d"))  # fmt: skip

    theirs, mine = _pair(build)
    torch.set_grad_enabled(False)
    ya = theirs[0](xa := spconv.SparseConvTensor(feat, idx, [50, 40, 30], 2))
    yb = mine[0](xb := ours.SparseConvTensor(feat, idx, [50, 40, 30], 2))
    assert ya.spatial_shape == yb.spatial_shape
    assert torch.equal(ya.indices, yb.indices)  # the same output voxels in the same order
    torch.testing.assert_close(yb.features, ya.features, atol=1e-5, rtol=1e-5)
    za, zb = theirs[1](ya), mine[1](yb)
    assert torch.equal(za.indices, zb.indices) and torch.equal(zb.indices, idx)
    torch.testing.assert_close(zb.features, za.features, atol=1e-5, rtol=1e-5)
    torch.set_grad_enabled(True)
    del xa, xb


@needs_spconv
def test_2d_layers_match_spconv(one_thread):
    feat, idx = cloud(500, [30, 25], channels=4, seed=3)
    theirs, mine = _pair(lambda m: m.SparseSequential(m.SubMConv2d(4, 8, 3, indice_key="a"),
                                                      m.SparseConv2d(8, 8, 3, stride=2, padding=1, indice_key="b"),
                                                      m.SparseInverseConv2d(8, 4, 3, indice_key="b")))  # fmt: skip
    a, b = _both(theirs, mine, feat, idx, [30, 25])
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(b.features, a.features, atol=1e-5, rtol=1e-5)


@needs_spconv
def test_unet_matches_spconv_and_trains_on_cpu(one_thread):
    """A small sparse U-Net (the SpUNet pattern: subm blocks, stride-2 down, inverse up, BatchNorm, ReLU)."""

    def build(m):
        def block(c_in, c_out, key):
            return m.SparseSequential(m.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=key),
                                      torch.nn.BatchNorm1d(c_out), torch.nn.ReLU())  # fmt: skip

        return m.SparseSequential(block(6, 16, "s0"), m.SparseConv3d(16, 32, 2, stride=2, indice_key="down0"),
                                  block(32, 32, "s1"), m.SparseConv3d(32, 32, 2, stride=2, indice_key="down1"),
                                  block(32, 32, "s2"), m.SparseInverseConv3d(32, 32, 2, indice_key="down1"),
                                  block(32, 32, "s1"), m.SparseInverseConv3d(32, 16, 2, indice_key="down0"),
                                  block(16, 16, "s0"))  # fmt: skip

    feat, idx = cloud(5000, [64, 64, 32], channels=6, seed=4)
    theirs, mine = _pair(build)
    a, b = _both(theirs, mine, feat, idx, [64, 64, 32])
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(b.features, a.features, atol=1e-4, rtol=1e-4)
    opt = torch.optim.SGD(mine.parameters(), lr=0.1)
    loss = mine(ours.SparseConvTensor(feat, idx, [64, 64, 32], 2)).features.square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mine.parameters())
    opt.step()
