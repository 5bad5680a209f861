"""Benchmark harness: ours vs baselines in one process, reported as ratios.

Every benchmark test is parametrised by implementation and calls the ``bench`` fixture once::

    def bench_pack_keys(bench, impl):
        bench(fn, group="pack_keys N=1M cpu", impl=impl, baseline=(impl == "reference"))

At the end of the session a table per group prints each implementation's median time and its
ratio to the group's baseline (``ours/baseline``: below 1 is faster; ``speedup`` = inverse),
with the device and library versions. ``--ratio-json`` / ``--ratio-md`` save it. Pass
``points=N`` (points/s column) and ``bytes=B`` (GB/s column: bytes the op must read + write,
to compare with the measured copy bandwidth of the "memcpy" group) as extra info; ``flops=F``
and ``exps=E`` add TFLOP/s and exponentials/s (compare with the device's matrix and special-function
ceilings), ``peak_mb`` the measured peak device memory of one call.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import pytest
import torch

_RESULTS: list[dict] = []


def pytest_addoption(parser):
    g = parser.getgroup("pointins bench")
    g.addoption("--ratio-json", default=None, help="write the ratio table + environment as JSON")
    g.addoption("--ratio-md", default=None, help="write the ratio table + environment as Markdown")
    g.addoption("--bench-quick", action="store_true", help="small sizes only (smoke test)")


def cuda_ready() -> bool:
    from pointins import _ext

    return torch.cuda.is_available() and _ext.try_load() is not None and _ext.has_cuda()


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and pointins built with CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import pointins.ops as ops

    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    env.update({k: v for k, v in ops.build_info().items() if not k.endswith("_reason")})
    return env


@pytest.fixture
def quick(request) -> bool:
    return bool(request.config.getoption("--bench-quick"))


@pytest.fixture
def bench(benchmark, request):
    """``bench(fn, group=..., impl=..., baseline=False, device="cpu", rounds=None, **info)``: time
    ``fn`` (``rounds`` fixes the number of rounds, for slow baselines)."""

    def run(
        fn, *, group: str, impl: str, baseline: bool = False, device: str = "cpu", rounds: int | None = None, **info
    ):
        if device == "cuda":

            def call():
                out = fn()
                torch.cuda.synchronize()
                return out
        else:
            call = fn
        call()  # warm-up: allocator, Triton/JIT compilation, caches
        benchmark.group = group
        benchmark.extra_info.update(impl=impl, baseline=baseline, device=device, **info)
        if rounds is None:
            out = benchmark(call)
        else:  # slow baselines: a fixed number of rounds instead of pytest-benchmark's calibration
            out = benchmark.pedantic(call, rounds=rounds, iterations=1)
        st = benchmark.stats.stats
        _RESULTS.append(
            dict(
                group=group,
                impl=impl,
                baseline=baseline,
                device=device,
                median_s=st.median,
                iqr_s=st.iqr,
                rounds=st.rounds,
                **info,
            )
        )
        return out

    return run


def ratio_rows() -> list[dict]:
    rows = []
    groups: dict[str, list[dict]] = {}
    for r in _RESULTS:
        groups.setdefault(r["group"], []).append(r)
    for rs in groups.values():
        base = next((r for r in rs if r["baseline"]), None)
        for r in sorted(rs, key=lambda r: (not r["baseline"], r["median_s"])):
            row = dict(r)
            if base is not None:
                row["baseline_impl"] = base["impl"]
                row["ratio"] = r["median_s"] / base["median_s"]
                row["speedup"] = base["median_s"] / r["median_s"]
            rows.append(row)
    return rows


def rates(r: dict) -> str:
    """TFLOP/s, exponentials/s and peak memory where the benchmark recorded them."""
    parts = []
    if r.get("flops"):
        parts.append(f"{r['flops'] / r['median_s'] / 1e12:.1f} TFLOP/s")
    if r.get("exps"):
        parts.append(f"{r['exps'] / r['median_s'] / 1e9:.0f} Gexp/s")
    if r.get("peak_mb") is not None:
        parts.append(f"peak {r['peak_mb']:.0f} MB")
    return ", ".join(parts) or "-"


def markdown(rows: list[dict], env: dict) -> str:
    lines = ["# PointINS benchmarks", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items()]
    lines += [
        "",
        "| group | impl | median (ms) | ours/baseline | speedup vs baseline | Mpoints/s | GB/s | rates |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        name = r["impl"] + (" (baseline)" if r["baseline"] else "")
        mpts = f"{r['points'] / r['median_s'] / 1e6:.1f}" if r.get("points") else "-"
        gbs = f"{r['bytes'] / r['median_s'] / 1e9:.1f}" if r.get("bytes") else "-"
        lines.append(
            f"| {r['group']} | {name} | {r['median_s'] * 1e3:.3f} | {ratio} | {speed} | {mpts} | {gbs} | {rates(r)} |"
        )
    return "\n".join(lines) + "\n"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["pointins_environment"] = environment()
    output_json["pointins_ratios"] = ratio_rows()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RESULTS:
        return
    rows = ratio_rows()
    env = environment()
    tr = terminalreporter
    tr.section("pointins: ours vs baseline (median; ratio < 1 = faster than baseline)")
    tr.write_line(f"device: {env['gpu'] or env['cpu']} | torch {env['torch']} | {env['date']}")
    w = max(len(r["group"]) for r in rows)
    tr.write_line(f"{'group':<{w}}  {'impl':<28} {'median ms':>11} {'ratio':>8} {'speedup':>8} {'Mpts/s':>8}  rates")
    for r in rows:
        name = r["impl"] + ("*" if r["baseline"] else "")
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        mpts = f"{r['points'] / r['median_s'] / 1e6:.1f}" if r.get("points") else "-"
        ms = r["median_s"] * 1e3
        tr.write_line(f"{r['group']:<{w}}  {name:<28} {ms:>11.3f} {ratio:>8} {speed:>8} {mpts:>8}  {rates(r)}")
    tr.write_line("(* = the group's baseline)")
    if p := config.getoption("--ratio-json"):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        Path(p).write_text(json.dumps({"environment": env, "results": rows}, indent=2))
    if p := config.getoption("--ratio-md"):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        Path(p).write_text(markdown(rows, env))
