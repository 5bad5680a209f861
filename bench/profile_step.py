"""Where the time of a pretraining step goes: a phase table of the real training loop, per process.

    python bench/profile_step.py                          # cpu-demo, 5 warm-up + 20 timed steps (about 30 s on 2 cores)
    python bench/profile_step.py --steps 50 num_workers=0 # any train.py key=value override
    python bench/profile_step.py --as-configured          # keep the preset's warm-ups (offset loss off early on)
    python bench/profile_step.py --json prof.json         # also save the numbers

It runs ``pointins.train.run`` itself (same data loader, workers, model, optimiser; output in a temporary
folder) with the phase timers of :mod:`pointins._timing` switched on, and prints:

- the main process: wall ms per step of every phase (data wait, teacher / student encoder with its level
  structures per level, conv, attention, MLP, heads, masking, matching, losses, ODR, SCR with K-means and
  components, backward with the conv and attention kernels, clip, AdamW, EMA) and its share of the step;
- the data workers, or the view threads of an in-process run (num_workers=0, the cpu-demo default): CPU ms per
  step of the view pipeline's phases (read, scene grid sample, crops, geometry,
  colour, elastic, view grid sample, collate), summed over workers: what they take from the step's cores
  (CPU time, not wall time: on a CPU run they work at a lowered priority and wait for idle cores);
- the main process's CPU seconds per step (all its threads) next to its wall seconds: how well the
  intra-op threads are used.

By default the method's warm-ups are switched off (``ssl.offset_warmup=0 ssl.mask_warmup=0
ssl.teacher_temp_warmup=0``), so every timed step is a steady-state step with the offset branch on; the
timers add about 1% (wall time with and without them: ``--compare-untimed``). Times are wall-clock on a
shared machine: run it on a quiet one, one job at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

STEADY = ["ssl.offset_warmup=0", "ssl.mask_warmup=0", "ssl.teacher_temp_warmup=0"]
QUIET = ["vis_every=0", "ckpt_every=0", "log_every=1", "tensorboard=false"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python bench/profile_step.py",
        description="Phase table of the pretraining step (main process and data workers). Takes about "
        "(warmup + steps) x the step time plus start-up: ~30 s for the cpu-demo default on 2 cores. Prints the "
        "table; --json saves it. Extra key=value arguments override the training config.",
    )
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--as-configured", action="store_true", help="keep the preset's offset/mask/temperature warm-ups")
    p.add_argument("--min-share", type=float, default=0.002, help="hide phases below this share of the step")
    p.add_argument("--json", default=None, help="write the phase numbers here")
    p.add_argument("--compare-untimed", action="store_true", help="also time the same steps with the timers off")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def profile(preset: str, overrides: list[str], steps: int, warmup: int, timed: bool = True) -> dict:
    import torch

    from pointins import _timing, train
    from pointins.config import resolve

    cfg = resolve(preset, overrides)
    with tempfile.TemporaryDirectory(prefix="pointins-profile-") as tmp:
        cfg.out = str(Path(tmp) / "run")
        cfg.steps = max(cfg.steps, warmup + steps)
        if timed:
            _timing.enable(skip_steps=warmup, stop_after=warmup + steps)
        else:  # the comparison without timers: exactly warmup + steps steps, timed by the loop's own step_s
            cfg.steps = warmup + steps
        try:
            train.run(cfg, progress=False)
        except _timing.Done:
            pass
        finally:
            acc, wall = _timing.snapshot(), _timing.wall()
            _timing.enable(False)
        recs = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed_recs = [r for r in recs if warmup < r["step"] <= warmup + steps]
    points = sum(r["points_per_s"] * r["step_s"] for r in timed_recs)
    step_wall = sum(r["step_s"] for r in timed_recs)
    return {"acc": acc, "wall": wall if timed else step_wall, "points": points, "steps": len(timed_recs),
            "threads": torch.get_num_threads(), "workers": cfg.num_workers, "config": cfg.to_dict()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = [*QUIET, *([] if args.as_configured else STEADY), *args.overrides]
    import resource

    from pointins import _timing

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    r = profile(args.preset, overrides, args.steps, args.warmup)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    acc, steps, wall = r["acc"], r["steps"], r["wall"]
    main_acc = {k: v for k, v in acc.items() if not k.startswith(("worker", "view threads"))}
    work_acc = {k[len("worker/") :]: v for k, v in acc.items() if k.startswith("worker/")}
    thread_acc = {k[len("view threads/") :]: v for k, v in acc.items() if k.startswith("view threads/")}
    top = sum(v[0] for k, v in main_acc.items() if "/" not in k)
    main_acc["(untimed: progress bar, logging, loop)"] = [max(0.0, wall - top), 0.0]
    print(f"pointins step profile: preset {args.preset}, {steps} timed steps after {args.warmup} warm-up; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch threads {r['threads']}, "
          f"data workers {r['workers']}")  # fmt: skip
    print(f"step: {1e3 * wall / max(1, steps):.0f} ms wall, {r['points'] / max(wall, 1e-9):,.0f} points/s "
          f"({r['points'] / max(1, steps):,.0f} input points per step)")  # fmt: skip
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    print(f"main process: {cpu:.1f} CPU s over the whole run (all threads, start-up included)\n")
    print("main process (wall time; share of the step)")
    print(_timing.report(main_acc, steps, wall, min_share=args.min_share))
    if work_acc:
        print("\ndata workers (their CPU time per step, summed over workers; share of the step's wall time)")
        print(_timing.report(work_acc, steps, wall, min_share=args.min_share))
    if thread_acc:
        print("\nview threads (num_workers=0: their CPU time per step, summed over threads; the main process waits for "
              "them in 'data wait')")  # fmt: skip
        print(_timing.report(thread_acc, steps, wall, min_share=args.min_share))
    result = {"preset": args.preset, "overrides": overrides, "steps": steps, "warmup": args.warmup,
              "step_ms": 1e3 * wall / max(1, steps), "points_per_s": r["points"] / max(wall, 1e-9),
              "threads": r["threads"], "workers": r["workers"], "machine": platform.machine(),
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "phases_ms_per_step": {k: 1e3 * v[0] / max(1, steps) for k, v in acc.items()}}  # fmt: skip
    if args.compare_untimed:
        u = profile(args.preset, overrides, args.steps, args.warmup, timed=False)
        result["untimed_step_ms"] = 1e3 * u["wall"] / max(1, u["steps"])
        print(f"\nthe same steps with the timers off: {result['untimed_step_ms']:.0f} ms per step "
              f"(timed: {result['step_ms']:.0f})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
