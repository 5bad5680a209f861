"""pytest plugin for bench/gpu_check.sh: one JSON line per test, written and flushed as each test finishes,
so a run killed at any point still leaves what ran (names, outcome, seconds, the first lines of a failure).

    POINTINS_STREAM=OUT/tests.jsonl python -m pytest -p stream_results ...   (bench/ on PYTHONPATH)
"""

from __future__ import annotations

import json
import os
import time

_fh = None


def pytest_configure(config):
    global _fh
    path = os.environ.get("POINTINS_STREAM")
    if path:
        _fh = open(path, "a", buffering=1)  # line-buffered: every record reaches the file at once
        _fh.write(json.dumps({"event": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


def pytest_runtest_logreport(report):
    if _fh is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        rec = {"test": report.nodeid, "outcome": report.outcome, "seconds": round(report.duration, 3)}
        if report.outcome == "failed":
            text = str(report.longrepr)
            lines = [ln for ln in text.splitlines() if ln.startswith("E ")] or text.splitlines()[-8:]
            rec["error"] = "\n".join(lines[:12])[:2000]
        elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            rec["reason"] = str(report.longrepr[2])[:300]
        _fh.write(json.dumps(rec) + "\n")


def pytest_sessionfinish(session, exitstatus):
    if _fh is not None:
        _fh.write(json.dumps({"event": "finish", "exitstatus": int(exitstatus)}) + "\n")
        _fh.close()
