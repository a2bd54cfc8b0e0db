# Shared wiring: paths and target lists derived from the validated config. No stage logic here.
from pathlib import Path

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
ASSETS = config["assets"]
CONDA_ENV = "../envs/neuface.yaml"


def all_targets():
    return [f"{RESULTS}/preview/head_model.png"]


def parent_of(key):
    """A params function: the directory holding output `key` (keeps rules valid without a shared FS)."""
    return lambda wildcards, output: str(Path(output[key]).parent)
