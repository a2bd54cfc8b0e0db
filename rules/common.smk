# Shared wiring: paths, the sample sheet and target lists derived from the validated config. No stage logic.
import json
import zlib
from pathlib import Path

from neuface.sheets import read_sheet

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
ASSETS = config["assets"]
DEMO = config["demo"]["dir"]
BENCHMARK = config.get("benchmark")
# Directories whose videos are made by rules of this workflow (demo data, synthetic benchmark).
GENERATED_DIRS = [DEMO] + ([BENCHMARK["dir"]] if BENCHMARK else [])
CONDA_ENV = "../envs/neuface.yaml"

SHEET = read_sheet(config["samples"])  # validated: clear errors naming line and column
# sequence -> its videos, built once: input functions run once per job, so a per-job DataFrame lookup would make
# DAG construction quadratic in the sheet size (1M clips = 1M jobs per stage).
VIDEOS = SHEET.groupby("sequence", sort=True)["path"].agg(list).to_dict()
SEQUENCES = list(VIDEOS)
SPLITS = sorted(SHEET["split"].unique())
ANNOTATORS = list(config["fitting"]["annotators"])
GROUND_TRUTH = (
    SHEET.groupby("sequence")["ground_truth"].first().to_dict() if "ground_truth" in SHEET.columns else {}
)
_VIEW_COUNTS = SHEET.groupby("sequence")["view"].nunique()
BENCHMARK_MULTIVIEW = "|".join(_VIEW_COUNTS[_VIEW_COUNTS > 1].index) or "^$"
BENCHMARK_MONOCULAR = "|".join(_VIEW_COUNTS[_VIEW_COUNTS == 1].index) or "^$"
OVERLAY_SEQUENCES = SEQUENCES[: config["report"]["overlay_sequences"]]
OVERLAY_ANNOTATORS = [a for a in config["report"]["overlay_annotators"] if a in ANNOTATORS]


def parent_of(key):
    """A params function: the directory holding output `key` (keeps rules valid without a shared FS)."""
    return lambda wildcards, output: str(Path(output[key]).parent)


def video_inputs(wildcards):
    """Videos of a sequence that exist or that a rule makes (demo, benchmark); a missing one is recorded later."""
    paths = VIDEOS.get(wildcards.sequence)
    if paths is None:
        raise ValueError(f"sequence {wildcards.sequence!r} is not in the sample sheet {config['samples']}")
    return [p for p in paths if any(p.startswith(f"{d}/") for d in GENERATED_DIRS) or Path(p).exists()]


def cli_options_of(values, flags):
    """`--flag value` options for the keys of `values` that are set (null = the CLI's default)."""
    return " ".join(f"{flag} {values[key]}" for key, flag in flags.items() if values.get(key) is not None)


def cli_options(section, flags):
    """cli_options_of for the config section `section`."""
    return cli_options_of(config[section], flags)


def annotator_settings_json(annotator):
    """Settings of one annotator for `neuface fit --settings`: fitting.common, then fitting.settings[name]."""
    settings = {**config["fitting"]["common"], **config["fitting"]["settings"].get(annotator, {})}
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def sequence_seed(sequence):
    """A deterministic per-sequence seed (CRC32 of its id) for synthetic rendering and noise."""
    return zlib.crc32(sequence.encode()) % 100_000


def ground_truth_of(sequence):
    """The sequence's ground-truth file from the sheet, or None."""
    gt = GROUND_TRUTH.get(sequence)
    return gt if isinstance(gt, str) and gt else None


def metrics_inputs(wildcards):
    """Inputs of `metrics`: the fit and model files, plus ground truth (and frames, for scale) when known."""
    inputs = {
        "fit": f"{RESULTS}/fits/{wildcards.annotator}/{wildcards.sequence}.h5",
        "model": ASSETS["flame_model"],
        "embedding": ASSETS["landmark_embedding"],
    }
    gt = ground_truth_of(wildcards.sequence)
    if gt:
        inputs["gt"] = gt
        inputs["frames"] = f"{RESULTS}/frames/{wildcards.sequence}.h5"
    return inputs


def gpu_if(device):
    """Resource value: 1 GPU when the stage runs on CUDA, else none."""
    return 1 if str(device).startswith("cuda") else 0


def all_targets():
    return (
        [f"{RESULTS}/preview/head_model.png", f"{RESULTS}/report/index.md"]
        + expand(f"{RESULTS}/dataset/{{annotator}}/{{split}}.h5", annotator=ANNOTATORS, split=SPLITS)
    )
