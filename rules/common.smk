# Shared wiring: paths, the sample sheet and target lists derived from the validated config. No stage logic.
import json
import zlib
from pathlib import Path

from neuface.sheets import read_sheet
from neuface.shards import partition, shard_rows_digests
from neuface.train.regressor_settings import seed_suffix, split_seed_suffix
from neuface.workflow_checks import annotator_method, annotator_settings, resolved_settings_hash, validate_annotators

# Every annotator's settings are built now, as `neuface fit` builds them: a bad key or value fails `snakemake -n`
# with its name instead of every fit job after the front end ran.
validate_annotators(config)

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
# (a plain loop over the sorted sheet: pandas' groupby-to-list takes 15 s at 1M rows, this 0.5 s)
VIDEOS = {}
for _sequence, _path in zip(SHEET["sequence"], SHEET["path"]):
    VIDEOS.setdefault(_sequence, []).append(_path)
SEQUENCES = list(VIDEOS)
SPLITS = sorted(SHEET["split"].unique())
ANNOTATORS = list(config["fitting"]["annotators"])
GROUND_TRUTH = (
    SHEET.groupby("sequence")["ground_truth"].first().to_dict() if "ground_truth" in SHEET.columns else {}
)
OVERLAY_SEQUENCES = SEQUENCES[: config["report"]["overlay_sequences"]]
# Sharding (rules/shards.smk): 0 = a job per (stage, sequence); K = a job per (stage, shard of K sequences).
SHARD_SIZE = config["scale"]["shard_size"]
SHARDS = partition(SEQUENCES, SHARD_SIZE) if SHARD_SIZE else {}
SHARD_OF = {s: shard for shard, members in SHARDS.items() for s in members}
if SHARD_SIZE and BENCHMARK:
    raise ValueError("scale.shard_size applies to real and demo videos; the synthetic benchmark (config 'benchmark') "
                     "renders and runs one job per sequence: set scale.shard_size to 0")
OVERLAY_ANNOTATORS = [a for a in config["report"]["overlay_annotators"] if a in ANNOTATORS]


def parent_of(key):
    """A params function: the directory holding output `key` (keeps rules valid without a shared FS)."""
    return lambda wildcards, output: str(Path(output[key]).parent)


def is_generated(path):
    """Whether a rule of this workflow makes `path` (demo data, synthetic benchmark)."""
    return path.startswith(tuple(f"{d}/" for d in GENERATED_DIRS))


def videos_of(sequence):
    """Videos of a sequence that exist or that a rule makes (demo, benchmark); a missing one is recorded later."""
    paths = VIDEOS.get(sequence)
    if paths is None:
        raise ValueError(f"sequence {sequence!r} is not in the sample sheet {config['samples']}")
    return [p for p in paths if is_generated(p) or Path(p).exists()]


def video_inputs(wildcards):
    """Input function of `frames`: videos_of the job's sequence."""
    return videos_of(wildcards.sequence)


def cli_options_of(values, flags):
    """`--flag value` options for the keys of `values` that are set (null = the CLI's default)."""
    return " ".join(f"{flag} {values[key]}" for key, flag in flags.items() if values.get(key) is not None)


# `neuface encoder pretrain` options of an encoder.pretrain-like dict (the encoder_pretrain and
# pretrain_regressor_base rules).
PRETRAIN_FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "pool_size": "--pool-size", "lr": "--lr",
                  "seed": "--seed", "param_weight": "--param-weight", "prior_weight": "--prior-weight",
                  "device": "--device"}


def cli_options(section, flags):
    """cli_options_of for the config section `section`."""
    return cli_options_of(config[section], flags)


def shot_options(shots):
    """`neuface landmarks` options of the config section landmarks.shots (schema defaults filled in)."""
    if not shots.get("enabled", True):
        return "--no-shots"
    options = cli_options_of(
        shots,
        {"min_frames": "--shot-min-frames", "cut_threshold": "--cut-threshold", "cut_ratio": "--cut-ratio",
         "identity_stride": "--identity-stride"},
    )
    if "identity_threshold" in shots and shots["identity_threshold"] is None:
        return f"{options} --no-identity"
    return f"{options} {cli_options_of(shots, {'identity_threshold': '--identity-threshold'})}".strip()


def annotator_settings_json(annotator):
    """Settings of one annotator for `neuface fit --settings`: fitting.common, then fitting.settings[name]."""
    return json.dumps(annotator_settings(config, annotator), sort_keys=True, separators=(",", ":"))


def sequence_seed(sequence):
    """A deterministic per-sequence seed (CRC32 of its id) for synthetic rendering and noise."""
    return zlib.crc32(sequence.encode()) % 100_000


def ground_truth_of(sequence):
    """The sequence's ground-truth file from the sheet, or None."""
    gt = GROUND_TRUTH.get(sequence)
    return gt if isinstance(gt, str) and gt else None


# Annotators that write a sequence's ground truth as its fit (method groundtruth, e.g. `gt`): their fits need it.
GT_ANNOTATORS = {a for a in ANNOTATORS if annotator_method(config, a) == "groundtruth"}
if GT_ANNOTATORS and SHARD_SIZE:
    raise ValueError(f"annotators {sorted(GT_ANNOTATORS)} (method groundtruth) run one job per sequence: set "
                     "scale.shard_size to 0")


# `fit` and `fit_groundtruth` make the fits of these annotators (a pattern that matches no name when empty).
ENCODER_ANNOTATORS_RE = "|".join(a for a in ANNOTATORS if a not in GT_ANNOTATORS) or "(?!)"
GT_ANNOTATORS_RE = "|".join(sorted(GT_ANNOTATORS)) or "(?!)"


def fit_ground_truth(wildcards):
    """Input of `fit_groundtruth`: the sequence's ground truth (an error naming the sequence when it has none)."""
    gt = ground_truth_of(wildcards.sequence)
    if not gt:
        raise ValueError(f"annotator {wildcards.annotator!r} writes the ground truth as a fit, but sequence "
                         f"{wildcards.sequence!r} has no ground_truth in {config['samples']}")
    return [gt]


def fits_of(annotator, sequences=None):
    """What stands for the fits of `annotator` (all sequences, or these): the fit files, or their shards' markers."""
    sequences = SEQUENCES if sequences is None else sequences
    if SHARD_SIZE:
        return sorted({f"{RESULTS}/shards/fit/{annotator}/{SHARD_OF[s]}.tsv" for s in sequences})
    return [f"{RESULTS}/fits/{annotator}/{s}.h5" for s in sequences]


def overlay_fit_and_frames(input):
    """(fit, frames) file pairs of the report's overlays; with sharding, the per-sequence files behind its markers."""
    if SHARD_SIZE:
        return [(f"{RESULTS}/fits/{a}/{s}.h5", f"{RESULTS}/frames/{s}.h5")
                for a in OVERLAY_ANNOTATORS for s in OVERLAY_SEQUENCES]
    return list(zip(input.overlay_fits, input.overlay_frames))


def all_metrics():
    """What stands for every metrics file: the JSON files, or the metrics shards' markers."""
    if SHARD_SIZE:
        return expand(f"{RESULTS}/shards/metrics/{{annotator}}/{{shard}}.tsv", annotator=ANNOTATORS, shard=SHARDS)
    return expand(f"{RESULTS}/metrics/{{annotator}}/{{sequence}}.json", annotator=ANNOTATORS, sequence=SEQUENCES)


def frames_of(sequences):
    """What stands for the frames files of `sequences`: the files, or their shards' markers."""
    if SHARD_SIZE:
        return sorted({f"{RESULTS}/shards/frames/{SHARD_OF[s]}.tsv" for s in sequences})
    return [f"{RESULTS}/frames/{s}.h5" for s in sequences]


def stage_files_of(stage, sequences):
    """What stands for the per-sequence files of `stage` (crops, landmarks, ...): the files, or their shards' markers."""
    if SHARD_SIZE:
        return sorted({f"{RESULTS}/shards/{stage}/{SHARD_OF[s]}.tsv" for s in sequences})
    return [f"{RESULTS}/{stage}/{s}.h5" for s in sequences]


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


# ---- devices and GPU requests of the GPU-capable stages (docs/hpc.md, "GPUs")
# cluster_device (profiles/slurm: auto) replaces the stages' own device keys in cluster runs. The device is a param
# of these rules and `auto` is resolved by the job itself (cuda when it sees a GPU, else cpu), never here: the
# submit host that parses this file usually has no GPU.
CLUSTER_DEVICE = config.get("cluster_device")


def stage_device(device):
    """Device of a GPU-capable stage: cluster_device when set, else the stage's own key."""
    return CLUSTER_DEVICE if CLUSTER_DEVICE is not None else device


FIT_DEVICE = stage_device(config["fitting"]["device"])
PRETRAIN_DEVICE = stage_device(config["encoder"]["pretrain"]["device"])
# landmarks: only FAN runs on a GPU (dlib never does; `auto` picks FAN only when its weights are cached).
LANDMARKS_DEVICE = (stage_device(config["landmarks"]["device"]) if config["landmarks"]["backend"] == "fan"
                    else config["landmarks"]["device"])


def gpu_if(device):
    """Resource value: 1 GPU when the stage runs on `cuda[:N]` or on `auto` (a job can only see a GPU it asked
    for), else none."""
    device = str(device)
    return 1 if device == "auto" or device.startswith("cuda") else 0


def all_targets():
    return (
        [f"{RESULTS}/preview/head_model.png", f"{RESULTS}/report/index.md"]
        + expand(f"{RESULTS}/dataset/{{annotator}}/{{split}}.h5", annotator=ANNOTATORS, split=SPLITS)
        + (train_targets() if config["train"]["in_all"] else [])
    )


# ---- sharded stages (rules/shards.smk): `{sequence}` in these templates is filled by `neuface shard`
def per_sequence(stage, ext="h5", per_annotator=False):
    """A params function: the per-sequence path template of `stage` (`{sequence}` left for `neuface shard`)."""
    def template(wildcards):
        sub = f"{wildcards.annotator}/" if per_annotator else ""
        return f"{RESULTS}/{stage}/{sub}{{sequence}}.{ext}"
    return template


def shard_options(output, inputs=(), sheet_inputs=False):
    """A params function: the `neuface shard` options of a shard job (its templates are per_sequence functions)."""
    def options(wildcards):
        opts = [f"--sheet {config['samples']}", f"--shard {wildcards.shard}", f"--shard-size {SHARD_SIZE}",
                f"--max-crash-fraction {config['scale']['max_crash_fraction']}", f"--output '{output(wildcards)}'"]
        opts += [f"--input '{template(wildcards)}'" for template in inputs]
        return " ".join(opts + (["--sheet-inputs"] if sheet_inputs else []))
    return options


def shard_runtime(stage):
    """A resources function: minutes for K sequences of `stage`, doubled per attempt."""
    return lambda wildcards, attempt: max(5, round(config["scale"]["minutes_per_sequence"][stage] * SHARD_SIZE)) * 2 ** (attempt - 1)


def shard_videos(wildcards):
    """Videos of a shard that rules of this workflow make (demo, benchmark): inputs for the job order.

    Existing videos are not inputs: a million of them cost Snakemake a minute of planning per run. A changed
    sheet row still reruns its shard (shard_rows_digest is a param), and `neuface shard` redoes a sequence whose
    video is newer than its frames file; after replacing videos in place, `--forcerun frames_shard`.
    """
    return [p for s in SHARDS[wildcards.shard] for p in VIDEOS[s] if is_generated(p)]


SHARD_ROWS = shard_rows_digests(SHEET, SHARDS)  # shard -> digest of its sheet rows


def shard_rows_digest(wildcards):
    """A params function: the digest of the shard's sheet rows (a changed row reruns its shard)."""
    return SHARD_ROWS[wildcards.shard]


def shard_marker(stage, per_annotator=False):
    """An input function: the marker of the same shard (and annotator) in an upstream `stage`."""
    def marker(wildcards):
        sub = f"{wildcards.annotator}/" if per_annotator else ""
        return f"{RESULTS}/shards/{stage}/{sub}{wildcards.shard}.tsv"
    return marker


# ---- caps on requested resources (config scale.max_mem_mb / scale.max_runtime_min)
def cap_resources(rules, caps):
    """Cut every rule's `mem_mb` / `runtime` request to `caps` (resource -> maximum) on every attempt.

    The requests come from the profile (`default-resources`, `set-resources`, e.g. `mem_mb=4000 * 2 ** (attempt - 1)`)
    or from the rules themselves, and grow on each retry; Snakemake has no per-job ceiling of its own other than the
    `--resources` totals. Call this once all rules exist. It wraps each one's final resource (Snakemake merges the
    defaults, the rule's own resources and `--set-resources` when it defines a rule). Values that are not numbers
    yet (`<TBD>`, an input size not known before the input exists) are left alone.
    """
    from snakemake.resources import Resource

    def capped(resource, cap):
        def evaluate(wildcards, **aux):
            value = resource.evaluate(wildcards, **aux)
            value = value.value if isinstance(value, Resource) else value
            return min(value, cap) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        return Resource(resource.name, evaluate, raw=resource.raw)

    for rule_ in rules:
        for name, cap in caps.items():
            if name not in rule_.resources:  # mem_mb: also set as `mem` or `mem_mib` (Snakemake stores mem_mb)
                continue
            resource = rule_.resources[name]
            if resource.is_evaluable():
                rule_.resources[name] = capped(resource, cap)
            elif isinstance(resource.value, int) and resource.value > cap:
                rule_.resources[name] = Resource(name, cap)


# ---- training targets (rules/train.smk; docs/training.md)
SPLIT_SEQUENCES = {}
for _sequence, _split in zip(SHEET["sequence"], SHEET["split"]):
    SPLIT_SEQUENCES.setdefault(_split, {})[_sequence] = None


def split_sequences(split):
    """Sequences of `split` in sheet order; a clear error when the sheet has none (a training target needs them)."""
    if split not in SPLIT_SEQUENCES:
        raise ValueError(f"the sample sheet {config['samples']} has no sequence of split {split!r} (splits: "
                         f"{', '.join(SPLITS)}); set train.train_split / train.eval_split")
    return list(SPLIT_SEQUENCES[split])


def train_inputs(kind):
    """The table a training target ends in (its evaluations and models come with it)."""
    split_sequences(config["train"]["train_split"])
    split_sequences(config["train"]["eval_split"])
    for annotator in config["train"][kind]["annotators"] + (
            [config["train"]["motion_prior"]["test_annotator"]] if kind == "motion_prior" else []):
        if annotator not in ANNOTATORS:
            raise ValueError(f"train.{kind} uses the dataset of annotator {annotator!r}, which fitting.annotators "
                             f"({', '.join(ANNOTATORS)}) does not build")
    return [f"{RESULTS}/report/{'table5' if kind == 'regressor' else 'table4'}.md"]


def train_targets():
    """Both training targets (for `rule all` with train.in_all)."""
    return train_inputs("regressor") + train_inputs("motion_prior")


#: `neuface train regressor` options of each Table 5 fine-tuning variant.
REGRESSOR_VARIANT_OPTIONS = {"2d": "--no-3d", "3d": "", "3dexpr": "--identity-3d predicted",
                             "3dcanon": "--pose-3d canonical",
                             "3dexprcanon": "--identity-3d predicted --pose-3d canonical"}


#: a Table 5 variant wildcard: the variant, then `_seed<S>` for a repeat with another seed
REGRESSOR_VARIANT_RE = "(" + "|".join(REGRESSOR_VARIANT_OPTIONS) + ")(_seed[0-9]+)?"


def regressor_seeds(regressor):
    """Training seeds of each variant: `seed`, then one more per `repeats` beyond the first."""
    first = regressor.get("seed") or 0
    return [first + k for k in range(regressor.get("repeats", 1))]


def regressor_models(regressor):
    """Table 5 rows: the original encoder, then `<annotator>_<variant>` for every fine-tuned one (and
    `<annotator>_<variant>_seed<S>` for its repeats)."""
    repeats = regressor_seeds(regressor)[1:]  # the configured seed keeps the plain name
    return ["original"] + [f"{a}_{v}{seed_suffix(s)}" for a in regressor["annotators"]
                           for v in regressor["variants"] for s in [None, *repeats]]


def regressor_train_options(variant):
    """`neuface train regressor` options of the train.regressor config for a variant wildcard (its seed)."""
    seed = split_seed_suffix(variant)[1]
    regressor = config["train"]["regressor"]
    values = regressor if seed is None else {**regressor, "seed": seed}
    return cli_options_of(values, {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr",
                                   "seed": "--seed", "checkpoint_every": "--checkpoint-every"})


def prior_models(prior):
    """Table 4 rows: a prior per annotator, and `<first annotator>_subset<N>` with `subset: N`."""
    subset = [f"{prior['annotators'][0]}_subset{prior['subset']}"] if prior["subset"] and prior["annotators"] else []
    return list(prior["annotators"]) + subset


def regressor_base():
    """(kind, weights) of the encoder Table 5 fine-tunes: the annotating encoder (`train.regressor.base: encoder`)
    or a builtin encoder the workflow pre-trains from the 2D landmark loss alone (`builtin_2d`: like DECA, it never
    saw 3D labels)."""
    if config["train"]["regressor"]["base"] == "builtin_2d":
        return "builtin", f"{RESULTS}/train/base/builtin_2d.pt"
    return config["encoder"]["kind"], config["encoder"]["weights"]


def regressor_weights(model):
    """Encoder weights of a Table 5 row: `original` (the base, regressor_base) or `<annotator>_<variant>`."""
    if model == "original":
        return regressor_base()[1]
    return f"{RESULTS}/train/regressor/{model}.pt"


def prior_annotator(prior):
    """The annotator whose dataset a motion prior is trained on (`<annotator>` or `<annotator>_subset<N>`)."""
    return prior.rsplit("_subset", 1)[0] if "_subset" in prior else prior


def prior_subset_options(prior):
    """`--max-sequences N` for a subset prior, else nothing."""
    return f"--max-sequences {prior.rsplit('_subset', 1)[1]}" if "_subset" in prior else ""
