"""Run every benchmark module and print its figures next to the reference measured in the same run.

Usage: ``python -m benchmarks [--quick] [--only NAME ...] [--json OUT]``. Each row is a dict with keys
``name, value, unit, reference, ratio`` (``ratio = value / reference``, both measured in this run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

from neuface.io_utils import atomic_path
from neuface.logs import setup_logging

log = logging.getLogger("benchmarks")


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--only", nargs="*", default=None, help="module names (e.g. bench_flame)")
    parser.add_argument("--skip", nargs="*", default=[], help="module names to leave out")
    parser.add_argument("--json", default="benchmarks/results/latest.json", help="where to write all rows")
    args = parser.parse_args(argv)
    setup_logging(0)
    torch.set_num_threads(torch.get_num_threads())
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    log.info("machine: %s", machine)
    rows: list[dict] = []
    for name in [m for m in (args.only or discover()) if m not in args.skip]:
        module = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        for row in module.run(quick=args.quick):
            row = {"module": name, **row}
            rows.append(row)
            ref = row.get("reference")
            log.info(
                "%-14s %-48s %12.4g %-10s reference %12s  ratio %s",
                name, row["name"], row["value"], row["unit"],
                f"{ref:.4g}" if isinstance(ref, (int, float)) else "-",
                f"{row['ratio']:.3g}" if isinstance(row.get("ratio"), (int, float)) else "-",
            )
        log.info("%s took %.1f s", name, time.perf_counter() - t0)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
