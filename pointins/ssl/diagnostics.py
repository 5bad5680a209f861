"""Label diagnostics of pretraining: how close the offset branch is to the true instance centres.

Labels are read **for logging only**, never for a loss (the oracle controls of the ablation are the one
exception, and they say so). They exist only when the data has instance labels: the view pipeline then gives every
point ``centre``, the centroid (original frame) of its instance over the whole grid-sampled scene, NaN for points
of no instance. Each up-cast point takes the instance most of its input points belong to (no instance when most
belong to none).

Per logged step (:func:`step_diagnostics`, keys ``diag_*`` in ``metrics.jsonl``):

* ``diag_teacher_cos`` / ``diag_teacher_l1``: the teacher's offset targets (after ODR / SCR) against the true
  centre offsets at the same up-cast points of an instance: mean cosine, and L1 error as a share of the L1 of
  predicting zero (1 = no better than zero offsets); ``diag_raw_*`` the same for the teacher's raw offsets;
* ``diag_student_cos`` / ``diag_student_l1``: the student's predictions at its matched points;
* ``diag_scr_recall``: share of true instances (with at least ``scr_min_size`` up-cast points in a view) that a
  pseudo-instance of that view matches at IoU > 0.5; ``diag_scr_kept``: share of up-cast points in kept components;
  ``diag_scr_per_view``: pseudo-instances per view; ``diag_true_per_view``: true instances per view;
* ``diag_grad_sem`` / ``diag_grad_off``: norms of the gradients that the semantic loss and the weighted offset
  loss send into the student's up-cast features (what reaches the backbone).

:func:`plot_diagnostics` draws their curves from a run's ``metrics.jsonl`` as ``diagnostics.svg``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

__all__ = ["agreement", "plot_diagnostics", "scr_recall", "svg_lines", "true_offsets", "upcast_instances"]


@torch.no_grad()
def upcast_instances(instance: torch.Tensor, centre: torch.Tensor, to_upcast: torch.Tensor, n_up: int):
    """Majority instance of each up-cast point's input points (-1: mostly no instance; ties to the lower id) and
    that instance's centre ((N_up, 3), NaN where -1)."""
    inst = instance.long()
    big = int(inst.max()) + 2 if inst.numel() else 1
    key = to_upcast.long() * big + (inst + 1)  # instance -1 -> 0
    uniq, counts = torch.unique(key, return_counts=True)
    u, lab = uniq // big, uniq % big - 1
    # per up-cast point the (count, -label) maximum: sort by count descending, label ascending, keep the first
    order = torch.argsort(lab, stable=True)
    order = order[torch.argsort(-counts[order], stable=True)]
    order = order[torch.argsort(u[order], stable=True)]
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = u[order][1:] != u[order][:-1]
    best = order[first]
    out = torch.full((n_up,), -1, dtype=torch.long, device=instance.device)
    out[u[best]] = lab[best]
    cen = torch.full((n_up, 3), float("nan"), dtype=centre.dtype, device=centre.device)
    member = inst >= 0
    hit = member & (out[to_upcast] == inst)
    cen[to_upcast[hit]] = centre[hit]
    return out, cen


def true_offsets(centre_up: torch.Tensor, xyz_up: torch.Tensor) -> torch.Tensor:
    """True centre offsets (original frame) of up-cast points: centre - position (NaN where no instance)."""
    return centre_up.float() - xyz_up.float()


def agreement(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Mean cosine and L1 error over the L1 of the zero prediction, over rows where ``true`` is defined."""
    ok = torch.isfinite(true).all(1)
    p, t = pred[ok].float(), true[ok].float()
    if p.shape[0] == 0:
        return {"cos": float("nan"), "l1": float("nan"), "n": 0}
    cos = torch.nn.functional.cosine_similarity(p, t, dim=1, eps=1e-9)
    zero = t.abs().sum()
    l1 = float((p - t).abs().sum() / zero) if float(zero) > 0 else float("nan")
    return {"cos": float(cos.mean()), "l1": l1, "n": int(p.shape[0])}


@torch.no_grad()
def scr_recall(pseudo: torch.Tensor, inst_up: torch.Tensor, cloud: torch.Tensor, min_size: int) -> dict[str, float]:
    """Pseudo-instances (``pseudo``, unique over the batch, -1 none) against the true instances of each cloud
    (view): the share of true instances with >= ``min_size`` up-cast points matched at IoU > 0.5, the share of
    points in pseudo-instances, pseudo- and true instances per view."""
    n_clouds = int(cloud.max()) + 1 if cloud.numel() else 0
    matched = total = 0
    n_true = 0
    for c in range(n_clouds):
        sel = cloud == c
        pi, ti = pseudo[sel], inst_up[sel]
        ids, sizes = torch.unique(ti[ti >= 0], return_counts=True)
        keep = ids[sizes >= min_size]
        n_true += int(keep.numel())
        for t in keep.tolist():
            tm = ti == t
            cand = torch.unique(pi[tm & (pi >= 0)])
            best = 0.0
            for p in cand.tolist():
                pm = pi == p
                inter = int((tm & pm).sum())
                best = max(best, inter / int((tm | pm).sum()))
            matched += best > 0.5
            total += 1
    kept = float((pseudo >= 0).float().mean()) if pseudo.numel() else float("nan")
    n_pseudo = int(torch.unique(pseudo[pseudo >= 0]).numel())
    return {"recall": matched / total if total else float("nan"), "kept": kept,
            "pseudo_per_view": n_pseudo / max(n_clouds, 1), "true_per_view": n_true / max(n_clouds, 1)}  # fmt: skip


# ---- plots ---------------------------------------------------------------------------------------------------

_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]


def svg_lines(title: str, series: dict[str, list[tuple[float, float]]], ylabel: str = "", width: int = 720,
              height: int = 300, ylim: tuple[float, float] | None = None) -> str:  # fmt: skip
    """A line chart as SVG text: one polyline per series of (x, y) points (non-finite y skipped)."""
    left, right, top, bottom = 56, 190, 30, 40
    pw, ph = width - left - right, height - top - bottom
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    xs = [x for x, _ in pts] or [0.0, 1.0]
    ys = [y for _, y in pts] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = ylim if ylim else (min(0.0, min(ys)), max(ys) if max(ys) > min(0.0, min(ys)) else 1.0)
    sx = lambda x: left + pw * (x - x0) / (x1 - x0)
    sy = lambda y: top + ph - ph * (min(max(y, y0), y1) - y0) / (y1 - y0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">{title}</text>']  # fmt: skip
    for k in range(6):
        yv = y0 + (y1 - y0) * k / 5
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
    for k in range(6):
        xv = x0 + (x1 - x0) * k / 5
        out.append(f'<text x="{sx(xv):.1f}" y="{top + ph + 16}" text-anchor="middle">{xv:.0f}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">step</text>')
    if ylabel:
        out.append(f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
                   f'text-anchor="middle">{ylabel}</text>')  # fmt: skip
    for i, (name, s) in enumerate(series.items()):
        col = _COLORS[i % len(_COLORS)]
        seg = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s if math.isfinite(y))
        if seg:
            out.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.5" points="{seg}"/>')
        ly = top + 16 * i
        out.append(f'<rect x="{left + pw + 12}" y="{ly}" width="10" height="10" fill="{col}"/>')
        out.append(f'<text x="{left + pw + 26}" y="{ly + 9}">{name}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="black"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def plot_diagnostics(run_dir) -> Path | None:
    """``diagnostics.svg`` in a run folder from its ``metrics.jsonl``: offset agreement (teacher targets, raw
    teacher offsets, student predictions vs the true centre offsets), SCR's recall and kept share, and the gradient
    norms reaching the backbone. Returns the file, or None when the run logged no diagnostics."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    recs = [r for r in recs if any(k.startswith("diag_") for k in r)]
    if not recs:
        return None

    def s(key):
        return [(r["step"], float(r.get(key, float("nan")))) for r in recs]

    cos = {"teacher target": s("diag_teacher_cos"), "teacher raw": s("diag_raw_cos"), "student": s("diag_student_cos")}
    l1 = {"teacher target": s("diag_teacher_l1"), "teacher raw": s("diag_raw_l1"), "student": s("diag_student_l1")}
    scr = {"true instances matched (IoU > 0.5)": s("diag_scr_recall"), "points in kept components": s("diag_scr_kept")}
    grads = {"semantic loss": s("diag_grad_sem"), "offset loss (weighted)": s("diag_grad_off")}
    charts = [
        svg_lines("offsets vs the true centre offsets: mean cosine", cos, "cosine", ylim=(-0.2, 1.0)),
        svg_lines("L1 error / L1 of zero offsets (lower is better)", l1, "ratio"),
        svg_lines("SCR pseudo-instances", scr, "share", ylim=(0.0, 1.0)),
        svg_lines("gradient norm reaching the backbone (up-cast features)", grads, "norm"),
    ]
    h = sum(int(c.split('height="', 1)[1].split('"', 1)[0]) for c in charts)
    body, y = [], 0
    for c in charts:
        body.append(f'<g transform="translate(0,{y})">' + c.split(">", 1)[1].rsplit("</svg>", 1)[0] + "</g>")
        y += int(c.split('height="', 1)[1].split('"', 1)[0])
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="720" height="{h}" font-family="sans-serif" '
           f'font-size="11">' + "".join(body) + "</svg>\n")  # fmt: skip
    out = run_dir / "diagnostics.svg"
    out.write_text(svg)
    return out
