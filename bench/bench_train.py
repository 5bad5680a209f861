"""One PointINS pretraining step (teacher + student forward, losses, backward, AdamW, EMA) on a fixed batch of
two synthetic rooms: ``points/s`` counts the input points of all views.

Two comparisons per device, each in one process:

- **method cost**: the full PointINS step (offset branch + ODR + SCR) vs the semantic-only (Sonata/DOS-like)
  step on the same batch; the paper reports about +25% time, our target is <= +15%.
- **ops**: the full PointINS step on pointins kernels vs the same model with ``ops="reference"`` backbones
  (plain-PyTorch conv/attention/pooling/serialization; SCR's K-means and components stay ours).

CPU: ``tiny``, views as the ``cpu-demo`` preset (4 cm grid, up to 16k points per crop). GPU: ``base``,
the indoor defaults (2 cm, up to 65k points), bf16 autocast.
"""

from __future__ import annotations

import pytest
import torch

from pointins.data import synthetic
from pointins.data.collate import collate
from pointins.data.views import ViewConfig, ViewDataset
from pointins.models import build_backbone
from pointins.ssl import PointINS, SSLConfig, param_groups

CASES = [
    ("cpu", "tiny", 0.04, 16_000, dict(prototypes=256, head_hidden=512, head_dim=64, offset_hidden=128)),
    pytest.param("cuda", "base", 0.02, 65_536, {}, marks=pytest.mark.cuda),
]
_BATCHES: dict = {}


def _batch(grid, max_points, quick):
    key = (grid, max_points, quick)
    if key not in _BATCHES:
        scenes = [synthetic.indoor_scene(0, i) for i in range(2)]
        vc = ViewConfig(grid_size=grid, max_points=min(max_points, 6000) if quick else max_points,
                        local_views=2 if grid > 0.02 else 4)  # fmt: skip
        ds = ViewDataset(scenes, vc, seed=0)
        _BATCHES[key] = collate([ds[i] for i in range(2)])
    return _BATCHES[key]


def _to(b, device):
    if isinstance(b, dict):
        return {k: _to(v, device) for k, v in b.items()}
    return b.to(device) if isinstance(b, torch.Tensor) else b


def _step_fn(device, preset, grid, heads, batch, *, offset: bool, reference: bool):
    torch.manual_seed(0)
    bb = build_backbone(preset, in_channels=9, grid_size=grid)
    model = PointINS(bb, SSLConfig(offset=offset, **heads)).to(device)
    if reference:
        model.student.backbone.ops = model.teacher.backbone.ops = "reference"
    opt = torch.optim.AdamW(param_groups(model.student, bb.config.depths, 1e-4, 0.04), lr=1e-4)
    model.train()
    use_amp = device == "cuda"

    def step():
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(1)
        out = model.step_losses(batch, 0.5, step=1, generator=gen, autocast=use_amp)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.student.parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_teacher(0.996)
        return out.loss

    return step


def _points(batch) -> int:
    return int(sum(batch[k]["coord"].shape[0] for k in ("global", "local") if k in batch))


@pytest.mark.parametrize("device,preset,grid,max_points,heads", CASES)
@pytest.mark.parametrize("impl", ["PointINS", "semantic-only"])
def bench_train_method(bench, quick, device, preset, grid, max_points, heads, impl):
    batch = _to(_batch(grid, max_points, quick), device)
    step = _step_fn(device, preset, grid, heads, batch, offset=impl == "PointINS", reference=False)
    bench(step, group=f"train step {preset} {device}: method cost", impl=impl, baseline=impl == "semantic-only",
          device=device, rounds=5, points=_points(batch))  # fmt: skip


@pytest.mark.parametrize("device,preset,grid,max_points,heads", CASES)
@pytest.mark.parametrize("impl", ["ours", "reference ops"])
def bench_train_ops(bench, quick, device, preset, grid, max_points, heads, impl):
    batch = _to(_batch(grid, max_points, quick), device)
    step = _step_fn(device, preset, grid, heads, batch, offset=True, reference=impl == "reference ops")
    bench(step, group=f"train step {preset} {device}: ops", impl=impl, baseline=impl == "reference ops",
          device=device, rounds=5, points=_points(batch))  # fmt: skip
