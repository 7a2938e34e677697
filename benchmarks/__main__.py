"""``python -m benchmarks [names…] [options]``: run benchmarks, write one JSON file each, print one line each.

Run from the project root (``make bench`` does). With no names, every
``benchmarks/bench_*.py`` runs, in name order. A name is the module name with or without
its ``bench_`` prefix (``scale`` or ``bench_scale``). The exit status is 1 when a
benchmark raised (its file then records the error), 2 for an unknown name or option, 0
otherwise: a missed target is a measured fact recorded in the file, not a failure of the run.

Options follow the names and belong to the one benchmark named: a module that defines
``add_arguments(parser)`` takes options (``python -m benchmarks verdicts --reps 500``; its
``--help`` lists them), receives them as ``run(out_dir, options)`` and may define
``record_path(options)`` to write its JSON record somewhere other than
``benchmarks/results/<name>.json``. Run without options, it gets ``run(out_dir)``.
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


def options_parser(name: str) -> argparse.ArgumentParser | None:
    """The parser of a benchmark's own options, or None when it takes none."""
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    add_arguments = getattr(module, "add_arguments", None)
    if add_arguments is None:
        return None
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=doc)
    add_arguments(parser)
    return parser


def record_path(name: str, out_dir: Path, options: argparse.Namespace | None = None) -> Path:
    """Where a benchmark's JSON record goes: ``out_dir/<name>.json`` unless its module says otherwise."""
    try:
        module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    except Exception:  # an unimportable benchmark records its error at the default place
        return out_dir / f"{name}.json"
    custom = getattr(module, "record_path", None)
    return out_dir / f"{name}.json" if custom is None else Path(custom(options))


def run_one(name: str, out_dir: Path, options: argparse.Namespace | None = None) -> tuple[dict[str, Any], bool]:
    """Run one benchmark (with its own ``options`` when given); return its record and whether it raised."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    record: dict[str, Any] = {"name": name, "started": started, "seconds": None, "environment": _environment()}
    try:
        module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
        result = module.run(out_dir) if options is None else module.run(out_dir, options)
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
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"benchmarks to run (default: all of {names}); options after one name are its own")
    argv = list(sys.argv[1:] if argv is None else argv)
    # names first, then the options of the one benchmark named (see the module docstring)
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    args = parser.parse_args(argv if split == 0 else argv[:split])
    chosen = [n.removeprefix(PREFIX) for n in args.names] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(map(repr, unknown))}; available: {', '.join(names) or 'none'}")
    options = None
    if 0 < split < len(argv):
        own = options_parser(chosen[0]) if len(set(chosen)) == 1 else None
        if own is None:
            parser.error(f"options {' '.join(argv[split:])!r} need exactly one benchmark that takes options "
                         f"(a module defining add_arguments)")
        options = own.parse_args(argv[split:])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in dict.fromkeys(chosen):
        record, raised = run_one(name, RESULTS_DIR, options)
        failed += raised
        path = record_path(name, RESULTS_DIR, options)
        path.parent.mkdir(parents=True, exist_ok=True)
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
