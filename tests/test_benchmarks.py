"""The benchmark modules import and expose run(quick) (they are run by `make bench`, not by the tests)."""

import importlib
import inspect

from benchmarks.__main__ import discover


def test_every_benchmark_module_imports_and_has_run():
    names = discover()
    assert {"bench_flame", "bench_render", "bench_fitting", "bench_dataset", "bench_dag"} <= set(names)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        assert "quick" in inspect.signature(module.run).parameters, name
