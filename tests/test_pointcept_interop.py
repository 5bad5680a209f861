"""Checkpoints both ways with Pointcept's PT-v3m2: export (names, layouts, wrapping), round trip, and
``init=`` for continued pretraining from a Sonata-layout checkpoint."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from pointins import train
from pointins.config import resolve
from pointins.models import (
    PRESETS,
    build_backbone,
    load_pointcept_state_dict,
    pointcept_backbone_config,
    save_pointcept_state_dict,
)


def pointcept_ptv3m2_encoder_keys(depths, in_channels, channels, mask_token=False) -> dict[str, tuple]:
    """The encoder parameter names and shapes of Pointcept's PT-v3m2 (enc_mode=True, LayerNorm, no layer scale,
    no RPE), written from its module structure: Embedding(stem = PointSequential(linear=, norm=, act=)),
    enc = PointSequential(enc{s} = PointSequential(down = GridPooling(proj, norm=PointSequential(LN), act),
    block{i} = Block(cpe = PointSequential(SubMConv3d, Linear, LN), norm1/norm2 = PointSequential(LN),
    attn = SerializedAttention(qkv, proj), mlp = PointSequential(MLP(fc1, fc2)))))."""
    c0 = channels[0]
    keys = {"embedding.stem.linear.weight": (c0, in_channels), "embedding.stem.linear.bias": (c0,),
            "embedding.stem.norm.weight": (c0,), "embedding.stem.norm.bias": (c0,)}  # fmt: skip
    if mask_token:
        keys["embedding.mask_token"] = (1, c0)
    for s, (d, c) in enumerate(zip(depths, channels, strict=True)):
        pre = f"enc.enc{s}."
        if s > 0:
            keys.update({pre + "down.proj.weight": (c, channels[s - 1]), pre + "down.proj.bias": (c,),
                         pre + "down.norm.0.weight": (c,), pre + "down.norm.0.bias": (c,)})  # fmt: skip
        for i in range(d):
            b = f"{pre}block{i}."
            keys.update({
                b + "cpe.0.weight": (c, 3, 3, 3, c), b + "cpe.0.bias": (c,),  # spconv 2.x SubMConv3d
                b + "cpe.1.weight": (c, c), b + "cpe.1.bias": (c,), b + "cpe.2.weight": (c,), b + "cpe.2.bias": (c,),
                b + "norm1.0.weight": (c,), b + "norm1.0.bias": (c,),
                b + "attn.qkv.weight": (3 * c, c), b + "attn.qkv.bias": (3 * c,),
                b + "attn.proj.weight": (c, c), b + "attn.proj.bias": (c,),
                b + "norm2.0.weight": (c,), b + "norm2.0.bias": (c,),
                b + "mlp.0.fc1.weight": (4 * c, c), b + "mlp.0.fc1.bias": (4 * c,),
                b + "mlp.0.fc2.weight": (c, 4 * c), b + "mlp.0.fc2.bias": (c,),
            })  # fmt: skip
    return keys


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_names_and_shapes_are_pt_v3m2s(preset):
    with torch.device("meta"):
        model = build_backbone(preset, in_channels=9)
    want = pointcept_ptv3m2_encoder_keys(PRESETS[preset]["depths"], 9, PRESETS[preset]["channels"])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    cfg = pointcept_backbone_config(model)
    assert cfg["type"] == "PT-v3m2" and cfg["enc_channels"] == PRESETS[preset]["channels"] and cfg["enc_mode"]


def test_export_round_trip_is_bitwise(tmp_path):
    torch.manual_seed(0)
    model = build_backbone("small", in_channels=9)
    for p in model.parameters():  # non-default values everywhere (norms included)
        p.data.normal_()
    path = save_pointcept_state_dict(model, tmp_path / "m.pth")
    obj = torch.load(path, weights_only=True)
    assert set(obj) >= {"state_dict", "epoch"}
    assert all(k.startswith("module.backbone.") for k in obj["state_dict"])
    back = build_backbone("small", in_channels=9)
    missing, unexpected = load_pointcept_state_dict(back, path, strict=True)
    assert not missing and not unexpected
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    # what Pointcept's CheckpointLoader does with Sonata's keywords (module.student.backbone -> module.backbone),
    # then DefaultSegmentorV2.backbone loads it: exactly the encoder's keys, nothing missing or unexpected
    loaded = {k.replace("module.student.backbone", "module.backbone", 1)[len("module."):]: v
              for k, v in obj["state_dict"].items()}  # fmt: skip
    enc = {k[len("backbone.") :]: tuple(v.shape) for k, v in loaded.items()}
    assert enc == pointcept_ptv3m2_encoder_keys(PRESETS["small"]["depths"], 9, PRESETS["small"]["channels"])


def _backbone_pt(tmp_path, preset="tiny", in_ch=9):
    torch.manual_seed(1)
    model = build_backbone(preset, in_channels=in_ch)
    path = tmp_path / "run" / "backbone.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "pointins-backbone-1", "backbone": model.state_dict(),
                "backbone_config": asdict(model.config), "feat_keys": ["coord", "color", "normal"],
                "in_channels": in_ch, "heads": {}, "config": {}, "step": 7}, path)  # fmt: skip
    return model, path


def test_export_cli(tmp_path):
    model, path = _backbone_pt(tmp_path)
    out = tmp_path / "pc" / "model.pth"
    r = subprocess.run([sys.executable, "-m", "pointins.export", "--checkpoint", str(path.parent), "--format",
                        "pointcept", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "PT-v3m2" in r.stdout and "enc_channels=(16, 32, 64, 128, 192)" in r.stdout.replace("'", "")
    back = build_backbone("tiny", in_channels=9)
    assert load_pointcept_state_dict(back, out, strict=True) == ([], [])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True))
    r = subprocess.run([sys.executable, "-m", "pointins.export", "--checkpoint", str(tmp_path / "nope"), "--format",
                        "pointcept", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def _sonata_layout(tmp_path, preset="tiny", in_ch=9):
    """A checkpoint laid out as Sonata's pretraining writes it: student and teacher backbones (different values),
    heads, a mask token."""
    torch.manual_seed(2)
    student, teacher = build_backbone(preset, in_channels=in_ch), build_backbone(preset, in_channels=in_ch)
    sd = {f"module.student.backbone.{k}": v for k, v in student.state_dict().items()}
    sd.update({f"module.teacher.backbone.{k}": v + 1 for k, v in teacher.state_dict().items()})
    sd["module.student.backbone.embedding.mask_token"] = torch.zeros(1, student.config.channels[0])
    sd["module.student.head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "sonata.pth"
    torch.save({"state_dict": sd, "epoch": 5}, path)
    return student, path


def test_init_from_sonata_layout_starts_student_and_teacher(tmp_path):
    student, path = _sonata_layout(tmp_path)
    cfg = resolve("cpu-demo", [f"init={path}", "backbone=tiny"])
    bb = build_backbone("tiny", in_channels=9)
    train._init_backbone(bb, cfg, ("coord", "color", "normal"), 0)
    for (k, a), b in zip(bb.state_dict().items(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # the student's weights, not the teacher's
    from pointins.ssl import PointINS

    model = PointINS(bb, cfg.ssl)
    assert all(torch.equal(a, b) for a, b in zip(model.teacher.backbone.state_dict().values(),
                                                   student.state_dict().values(), strict=True))  # fmt: skip


def test_init_mismatches_are_clear(tmp_path):
    _, path = _sonata_layout(tmp_path)
    cfg = resolve("cpu-demo", [f"init={path}"])
    with pytest.raises(train.CheckpointError, match=r"9 input channels.*gives 6"):
        train._init_backbone(build_backbone("tiny", in_channels=6), cfg, ("coord", "color"), 0)
    cfg = resolve("cpu-demo", [f"init={path}", "backbone=small"])
    with pytest.raises(train.CheckpointError, match="backbone=tiny"):
        train._init_backbone(build_backbone("small", in_channels=9), cfg, ("coord", "color", "normal"), 0)
    junk = tmp_path / "junk.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, junk)
    with pytest.raises(train.CheckpointError, match="no PTv3 encoder"):
        train._init_backbone(build_backbone("tiny", in_channels=9), resolve("cpu-demo", [f"init={junk}"]),
                             ("coord", "color", "normal"), 0)  # fmt: skip


def test_train_with_init_end_to_end(tmp_path):
    import os

    student, path = _sonata_layout(tmp_path)
    out = tmp_path / "run"
    env = dict(os.environ, POINTINS_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "pointins.train", "--out", str(out), "--no-progress", f"init={path}",
                        "steps=1", "synthetic_scenes=2", "batch_size=1", "num_workers=0", "views.max_points=2000",
                        "views.local_views=1", "ckpt_every=1", "vis_every=0", "device=cpu", "lr=1e-12"],
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "initialised student and teacher encoders" in r.stderr
    ck = train.load_checkpoint(out)
    w = "backbone.enc.enc3.block0.attn.qkv.weight"
    torch.testing.assert_close(ck["teacher"][w], student.state_dict()[w[len("backbone.") :]], rtol=0, atol=1e-6)
