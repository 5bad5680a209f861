"""PTv3 encoder: shapes, parameter count, kernel path vs reference path, invariances, batching,
masking, checkpoints and torch.compile."""

from __future__ import annotations

import pytest
import torch

import pointins.ops as ops
from pointins.models import PRESETS, Point, PTv3Config, build_backbone, load_pointcept_state_dict


def scene(n=3000, extent=3.0, grid=0.1, in_channels=6, seed=0, offset=(0.0, 0.0, 0.0)):
    """A grid-sampled cloud: a floor, two walls and a few boxes (surfaces, like a scan)."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    k = n // 4
    floor = torch.rand(k, 3, generator=g) * torch.tensor([extent, extent, 0.0])
    wall_x = torch.rand(k, 3, generator=g) * torch.tensor([extent, 0.0, 1.0])
    wall_y = torch.rand(k, 3, generator=g) * torch.tensor([0.0, extent, 1.0])
    boxes = torch.rand(n - 3 * k, 3, generator=g) * torch.tensor([0.6, 0.6, 0.5]) + torch.tensor([1.0, 1.0, 0.0])
    parts = torch.cat([floor, wall_x, wall_y, boxes])
    vox = ops.voxelize(parts, torch.tensor([0, n]), grid_size=grid, mode="all")
    coord = (vox.grid_coord.double() + 0.5) * grid + torch.tensor(offset, dtype=torch.float64)
    feat = torch.randn(len(vox), in_channels, generator=g, dtype=torch.float64)
    return Point(coord.float(), feat.float(), torch.tensor([0, len(vox)]), vox.grid_coord)


def batch_of(points):
    offsets = torch.tensor([0] + [len(p) for p in points]).cumsum(0)
    return Point(
        torch.cat([p.coord for p in points]),
        torch.cat([p.feat for p in points]),
        offsets,
        torch.cat([p.grid_coord for p in points]),
    )


def tiny(**kw):
    torch.manual_seed(0)
    return build_backbone("tiny", in_channels=6, patch_size=64, **kw)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_shapes(preset):
    model = build_backbone(preset, in_channels=6).eval()
    cfg = model.config
    p = scene(1500, grid=0.1)
    with torch.no_grad():
        out = model(p)
    assert out.full.shape == (len(p), sum(cfg.channels))
    assert out.feat.shape == (len(out.levels[2]), sum(cfg.channels[2:]))
    assert out.coord.shape == (len(out.levels[2]), 3)
    assert [f.shape for f in out.stage_feats] == [(len(lv), c) for lv, c in zip(out.levels, cfg.channels, strict=True)]
    assert out.point_to_upcast.shape == (len(p),)
    # the up-cast columns are [stage 2 | stage 3 | stage 4] at level 2; full starts with stage 0
    torch.testing.assert_close(out.feat[:, : cfg.channels[2]], out.stage_feats[2])
    torch.testing.assert_close(out.full[:, : cfg.channels[0]], out.stage_feats[0])
    torch.testing.assert_close(out.full[:, -sum(cfg.channels[2:]) :], out.feat[out.point_to_upcast])
    assert torch.isfinite(out.full).all()


def test_base_parameter_count():
    model = build_backbone("base")
    n = sum(p.numel() for p in model.parameters())
    assert 107e6 < n < 110e6, n  # Sonata's encoder: ~108 M
    assert model.config.upcast_channels == 1088 and model.config.full_channels == 1232
    assert tuple(model.enc.enc0.block0.cpe[0].weight.shape) == (48, 3, 3, 3, 48)  # spconv layout


def test_kernel_path_matches_reference_path_with_grads():
    model = tiny().double().train()
    model.config.shuffle_orders = False
    for m in model.modules():
        if hasattr(m, "p"):
            m.p = 0.0  # no drop path: both runs must see the same network
    p = scene(2500, grid=0.1)
    p = Point(p.coord.double(), p.feat.double().requires_grad_(), p.offsets, p.grid_coord)
    outs, grads = [], []
    for mode in ("auto", "reference"):
        model.ops = mode
        model.zero_grad()
        out = model(p)
        g = torch.autograd.grad(
            (out.full.sin().sum() + out.feat.square().mean()), [p.feat, *model.parameters()], allow_unused=False
        )
        outs.append(out)
        grads.append(g)
    torch.testing.assert_close(outs[0].full, outs[1].full, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outs[0].feat, outs[1].feat, rtol=1e-9, atol=1e-9)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_permuting_points_permutes_outputs():
    model = tiny().eval()
    p = scene(2500, grid=0.1)
    perm = torch.randperm(len(p))
    q = Point(p.coord[perm], p.feat[perm], p.offsets, p.grid_coord[perm])
    with torch.no_grad():
        a, b = model(p), model(q)
    torch.testing.assert_close(b.full, a.full[perm], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.feat[b.point_to_upcast], a.feat[a.point_to_upcast][perm], rtol=1e-4, atol=1e-4)


def test_translation_invariance():
    model = tiny().eval()
    p = scene(2000, grid=0.125)
    q = scene(2000, grid=0.125, offset=(7 * 0.125, -3 * 0.125, 11 * 0.125))  # same voxels, shifted frame
    q = Point(q.coord, p.feat, q.offsets, None)  # grid coords recomputed from the shifted coords
    model.config.grid_size = 0.125
    with torch.no_grad():
        a, b = model(Point(p.coord, p.feat, p.offsets, None)), model(q)
    torch.testing.assert_close(b.full, a.full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.coord - a.coord, torch.tensor([7, -3, 11]) * 0.125 * torch.ones_like(a.coord))


def test_batch_of_clouds_equals_clouds_alone():
    """Clouds of different sizes in one batch give the same features as each cloud alone (patches,
    kernel maps and pooling never cross clouds). Their grids share one bit length, so the batch's
    serialization depth is each cloud's own."""
    model = tiny().eval()
    clouds = [scene(n, extent=e, grid=0.1, seed=i) for i, (n, e) in enumerate([(600, 3.5), (2500, 4.0), (1200, 3.3)])]
    assert len({ops.auto_depth(c.grid_coord) for c in clouds}) == 1
    with torch.no_grad():
        together = model(batch_of(clouds))
        alone = [model(c) for c in clouds]
    starts = together.offsets.tolist()
    pstarts = batch_of(clouds).offsets.tolist()
    for i, a in enumerate(alone):
        torch.testing.assert_close(together.full[pstarts[i] : pstarts[i + 1]], a.full, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together.feat[starts[i] : starts[i + 1]], a.feat, rtol=1e-4, atol=1e-4)


def test_cpu_forward_backward_tiny_training_mode():
    model = tiny(mask_token=True).train()
    p = scene(3000, grid=0.1)
    p.mask = torch.rand(len(p)) < 0.5
    p.feat.requires_grad_(True)
    out = model(p)
    loss = out.feat.square().mean() + out.full.abs().mean()
    loss.backward()
    for name, prm in model.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert model.embedding.mask_token.grad.abs().sum() > 0
    assert (p.feat.grad[p.mask] == 0).all()  # masked points' inputs are replaced by the token
    # orders are reshuffled every forward in training mode, fixed in eval mode
    seen = {model.build_levels(p)[0].serialization.orders for _ in range(12)}
    assert len(seen) > 1
    model.eval()
    assert {model.build_levels(p)[0].serialization.orders for _ in range(3)} == {model.config.orders}


def test_dict_batches_and_pointcept_offsets():
    model = tiny().eval()
    p = scene(1200, grid=0.1)
    with torch.no_grad():
        a = model(p)
        b = model({"coord": p.coord, "feat": p.feat, "grid_coord": p.grid_coord, "offset": p.offsets[1:]})
        c = model({"coord": p.coord.numpy(), "feat": p.feat.numpy(), "batch": torch.zeros(len(p), dtype=torch.long)})
    torch.testing.assert_close(a.full, b.full)
    assert c.full.shape == a.full.shape  # grid coords computed from coord with config.grid_size


def test_bad_input():
    model = tiny().eval()
    p = scene(800, grid=0.1)
    with pytest.raises(ValueError, match="in_channels"):
        model(Point(p.coord, p.feat[:, :4], p.offsets, p.grid_coord))
    dup = Point(torch.cat([p.coord, p.coord[:3]]), torch.cat([p.feat, p.feat[:3]]), torch.tensor([0, len(p) + 3]),
                torch.cat([p.grid_coord, p.grid_coord[:3]]))  # fmt: skip
    with pytest.raises(ValueError, match="3 points share a voxel"):
        model(dup)
    bad = p.feat.clone()
    bad[5, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(Point(p.coord, bad, p.offsets, p.grid_coord))
    with pytest.raises(ValueError, match="16"):
        model(Point(p.coord, p.feat, p.offsets, p.grid_coord * 4000))
    with pytest.raises(ValueError, match="no points"):
        model(Point(p.coord[:0], p.feat[:0], torch.tensor([0, 0]), p.grid_coord[:0]))
    with pytest.raises(ValueError, match="ops must be"):
        model.ops = "fast"
    with pytest.raises(ValueError, match="split into"):
        PTv3Config(channels=(48, 96, 192, 384, 500))


def test_pointcept_key_map_round_trip(tmp_path):
    src = tiny(mask_token=True)
    state = {f"module.backbone.{k}": v.clone() for k, v in src.state_dict().items()}
    conv_key = "module.backbone.enc.enc1.block0.cpe.0.weight"
    state[conv_key] = state[conv_key].permute(1, 2, 3, 4, 0).contiguous()  # spconv 1.x layout
    state["module.backbone.dec.dec0.up.proj.weight"] = torch.zeros(2, 2)  # a decoder key: unexpected
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    dst = tiny(mask_token=True)
    missing, unexpected = load_pointcept_state_dict(dst, tmp_path / "ckpt.pth")
    assert missing == [] and unexpected == ["module.backbone.dec.dec0.up.proj.weight"]
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    wrong = build_backbone("small", in_channels=6)
    with pytest.raises(ValueError, match="different preset"):
        load_pointcept_state_dict(wrong, tmp_path / "ckpt.pth")


def test_torch_compile_runs():
    model = tiny().eval()
    p = scene(1500, grid=0.1)
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        a = model(p)
        b = compiled(p)
    torch.testing.assert_close(b.full, a.full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_inductor_forward_backward():
    model = tiny().train()
    model.config.shuffle_orders = False
    p = scene(1500, grid=0.1)
    compiled = torch.compile(model)
    out = compiled(p)
    out.feat.square().mean().backward()
    assert all(prm.grad is not None for prm in model.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_path_matches_reference(dtype):
    model = build_backbone("small", in_channels=6).cuda().eval()
    p = scene(60_000, extent=8.0, grid=0.04).to("cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        a = model(p)
        model.ops = "reference"
        b = model(p)
    err = float((a.full.float() - b.full.float()).norm() / b.full.float().norm())
    assert err < (2e-2 if dtype == torch.bfloat16 else 1e-4), err


@pytest.mark.parametrize("top", [249, 255, 256, 127, 63, 64, 511, 1000, 1023, 31, 7])
def test_serialization_depth_recomputed_per_level_like_pointcept(top):
    """Pointcept's Point.serialization recomputes depth = bit_length(max grid coord + 1) at every level. 'One
    less per pooling' differs when a pooled max + 1 is a power of two (a 4.98 m room at 2 cm: 8, 7, 6, 6, 5)."""
    g = torch.Generator().manual_seed(top)
    grid = torch.randint(0, top + 1, (3000, 3), generator=g, dtype=torch.int32)
    grid[0] = top  # the maximum is reached
    grid = torch.unique(grid, dim=0)
    n = grid.shape[0]
    model = build_backbone("tiny", in_channels=3, grid_size=0.02).eval()
    levels = model.build_levels({"coord": grid.float() * 0.02, "feat": torch.zeros(n, 3),
                                 "offsets": torch.tensor([0, n]), "grid_coord": grid})  # fmt: skip
    depths = []
    for lv in levels:
        want = int(lv.grid_coord.max() + 1).bit_length()  # independent: from the level's own grid
        assert lv.depth == want and lv.max_coord == int(lv.grid_coord.max())
        ser = lv.serialization
        assert ser.depth == want
        for k, name in enumerate(ser.orders):  # the codes are those of the independent depth
            assert torch.equal(ser.code[k], ops.encode(lv.grid_coord, offsets=lv.offsets, order=name, depth=want))
        depths.append(lv.depth)
    if top == 249:
        assert depths == [8, 7, 6, 6, 5]


@pytest.mark.parametrize("training", [True, False])
def test_lean_level_builder_equals_the_checked_ops_path(training):
    """build_levels calls the compiled kernels directly (no per-call wrapper checks); every field of every level
    must equal what the public pointins.ops wrappers build (the path the reference mode still uses, step by step),
    including the shuffled curve orders drawn from the same RNG state."""
    model = tiny().train(training)
    p = batch_of([scene(2500, seed=1), scene(1800, seed=2, offset=(5.0, 0.0, 0.0)), scene(900, seed=3)])
    torch.manual_seed(7)
    lean = model.build_levels(p)
    after_lean = torch.rand(3)
    torch.manual_seed(7)
    with torch.no_grad():
        checked = [model._input_level(p)]
        for s in range(1, len(model.config.depths)):
            checked.append(model._pool_level(checked[-1], s))
    assert torch.equal(after_lean, torch.rand(3))  # the same random draws were consumed
    for a, b in zip(lean, checked, strict=True):
        assert (a.depth, a.max_coord, a.patch_size) == (b.depth, b.max_coord, b.patch_size)
        assert a.serialization.orders == b.serialization.orders and a.serialization.depth == b.serialization.depth
        for name in ("code", "order", "inverse"):
            assert torch.equal(getattr(a.serialization, name), getattr(b.serialization, name)), name
        for name in ("coord", "grid_coord", "offsets", "pad", "unpad", "cu_seqlens", "kernel_map", "parent"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), name
