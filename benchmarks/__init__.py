"""neuface benchmarks (``make bench``). Each ``bench_*`` module exposes ``run(quick=False) -> list[dict]``."""
