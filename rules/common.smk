# Shared wiring: paths, the sample sheet and target lists derived from the validated config. No stage logic.
from pathlib import Path

from neuface.sheets import read_sheet

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
ASSETS = config["assets"]
DEMO = config["demo"]["dir"]
CONDA_ENV = "../envs/neuface.yaml"

SHEET = read_sheet(config["samples"])  # validated: clear errors naming line and column
SEQUENCES = sorted(SHEET["sequence"].unique())


wildcard_constraints:
    sequence="|".join(SEQUENCES) if SEQUENCES else "[A-Za-z0-9][A-Za-z0-9._-]*",


def parent_of(key):
    """A params function: the directory holding output `key` (keeps rules valid without a shared FS)."""
    return lambda wildcards, output: str(Path(output[key]).parent)


def video_inputs(wildcards):
    """Videos of a sequence that exist or that a demo rule makes; a missing one is recorded by the stage."""
    paths = SHEET.loc[SHEET["sequence"] == wildcards.sequence, "path"]
    return [p for p in paths if Path(p).exists() or p.startswith(f"{DEMO}/")]


def cli_options(section, flags):
    """`--flag value` options for the config keys of `section` that are set (null = the CLI's default)."""
    values = config[section]
    return " ".join(f"{flag} {values[key]}" for key, flag in flags.items() if values.get(key) is not None)


def gpu_if(device):
    """Resource value: 1 GPU when the stage runs on CUDA, else none."""
    return 1 if str(device).startswith("cuda") else 0


def all_targets():
    return [f"{RESULTS}/preview/head_model.png"] + expand(f"{RESULTS}/crops/{{sequence}}.h5", sequence=SEQUENCES)
