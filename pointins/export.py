"""``python -m pointins.export``: hand a pretrained encoder to another framework.

    python -m pointins.export --checkpoint runs/scannet --format pointcept sonata-format.pth
    python -m pointins.export --checkpoint runs/scannet/backbone.pt --format pointcept out.pth --prefix sonata

``--checkpoint`` is a run folder (its ``backbone.pt``, else its ``latest`` checkpoint), a ``backbone.pt`` or a
``ckpt_*.pt``. ``--format pointcept`` writes ``{"state_dict": {"module.backbone.<name>": tensor}}`` with
PT-v3m2's names and spconv layouts, which Pointcept's ``CheckpointLoader`` loads into a segmentor's backbone
with no missing or unexpected encoder keys (``--prefix sonata`` writes ``module.student.backbone.`` instead,
Sonata's own pretraining layout). It prints the ``backbone=dict(type="PT-v3m2", ...)`` settings the
Pointcept config must use for the weights to fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]

PREFIXES = {"backbone": "module.backbone.", "sonata": "module.student.backbone."}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pointins.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run folder, backbone.pt or ckpt_*.pt")
    p.add_argument("--format", default="pointcept", choices=["pointcept"], help="target layout")
    p.add_argument("--prefix", default="backbone", choices=sorted(PREFIXES),
                   help="key wrapping: backbone (module.backbone., default) or sonata "
                   "(module.student.backbone.)")  # fmt: skip
    p.add_argument("out", help="output .pth file")
    a = p.parse_args(argv)
    from pointins.eval.probe import EvalError, load_encoder
    from pointins.models import pointcept_backbone_config, save_pointcept_state_dict

    try:
        enc = load_encoder(a.checkpoint)
    except EvalError as e:
        print(str(e).replace("pointins.evaluate:", "pointins.export:", 1), file=sys.stderr)
        return 2
    out = Path(a.out)
    if out.is_dir():
        print(f"pointins.export: {out} is a folder; pass a file name such as {out / 'model.pth'}.", file=sys.stderr)
        return 2
    meta = {"source": enc.source, "step": enc.step, "feat_keys": list(enc.feat_keys), "grid_size": enc.grid_size,
            "color": "color / 255 (Pointcept NormalizeColor)"}  # fmt: skip
    try:
        save_pointcept_state_dict(enc.backbone, out, prefix=PREFIXES[a.prefix], meta=meta)
    except OSError as e:
        print(f"pointins.export: cannot write {out} ({e.strerror or e}).", file=sys.stderr)
        return 2
    cfg = pointcept_backbone_config(enc.backbone)
    n = sum(v.numel() for v in enc.backbone.state_dict().values())
    print(f"pointins.export: wrote {out} ({len(enc.backbone.state_dict())} tensors, {n / 1e6:.1f} M values, keys "
          f"{PREFIXES[a.prefix]}*) from {enc.source}")  # fmt: skip
    print(f"inputs: feat_keys {list(enc.feat_keys)} (coord, color / 255, normal), grid size {enc.grid_size} m")
    print("Pointcept backbone settings for these weights (enc_mode=False adds a decoder, trained from scratch):")
    print("backbone=dict(" + ", ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v!r}"
                                       for k, v in cfg.items()) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
