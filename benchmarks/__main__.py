"""``python -m benchmarks [names…]``: run benchmarks, write one JSON file each, print one line each.

Run from the project root (``make bench`` does). With no names, every
``benchmarks/bench_*.py`` runs, in name order. A name is the module name with or without
its ``bench_`` prefix (``scale`` or ``bench_scale``). The exit status is 1 when a
benchmark raised (its file then records the error), 2 for an unknown name, 0 otherwise:
a missed target is a measured fact recorded in the file, not a failure of the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import RESULTS_DIR

PREFIX = "bench_"


def available() -> list[str]:
    """Benchmark names (module names without ``bench_``), sorted."""
    here = Path(__file__).resolve().parent
    return sorted(m.name.removeprefix(PREFIX) for m in pkgutil.iter_modules([str(here)])
                  if m.name.startswith(PREFIX) and not m.ispkg)


def _jsonable(value: Any) -> Any:
    """JSON has no inf/NaN: write them as the strings "inf", "-inf", "nan" so the file
    stays valid and the value is still readable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _environment() -> dict[str, Any]:
    import numpy

    return {"python": platform.python_version(), "numpy": numpy.__version__, "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count()}


def _line(name: str, record: dict[str, Any], path: Path) -> str:
    """The console summary of one benchmark."""
    head = f"{name}: {record['status']} in {record['seconds']:.1f} s"
    if record["status"] != "ok":
        return f"{head}: {record['error']} -> {path}"
    result = record["result"]
    summary = result.get("summary")
    if not isinstance(summary, str):
        scalars = [f"{k}={v}" for k, v in result.items() if isinstance(v, int | float | str)]
        summary = ", ".join(scalars)[:160]
    targets = result.get("targets")
    if isinstance(targets, dict) and targets:
        met = sum(1 for t in targets.values() if isinstance(t, dict) and t.get("met", t.get("pass")) is True)
        summary += f" [targets met {met}/{len(targets)}]"
    return f"{head}: {summary} -> {path}"


def run_one(name: str, out_dir: Path) -> tuple[dict[str, Any], bool]:
    """Run one benchmark; return its record and whether it raised."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    record: dict[str, Any] = {"name": name, "started": started, "seconds": None, "environment": _environment()}
    try:
        module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
        result = module.run(out_dir)
        if not isinstance(result, dict):
            raise TypeError(f"{PREFIX}{name}.run() returned {type(result).__name__}, expected dict")
        record.update(status="ok", result=result)
        raised = False
    except Exception as exc:  # a broken benchmark is recorded and reported, the others still run
        traceback.print_exc()
        record.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raised = True
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record, raised


def main(argv: Sequence[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Run benchmarks, write one JSON file each, print one line each.")
    parser.add_argument("names", nargs="*", metavar="name", help=f"benchmarks to run (default: all of {names})")
    args = parser.parse_args(argv)
    chosen = [n.removeprefix(PREFIX) for n in args.names] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(map(repr, unknown))}; available: {', '.join(names) or 'none'}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in dict.fromkeys(chosen):
        record, raised = run_one(name, RESULTS_DIR)
        failed += raised
        path = RESULTS_DIR / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_jsonable(record), indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        try:
            shown = path.relative_to(Path.cwd())
        except ValueError:
            shown = path
        print(_line(name, record, shown), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
