# neuface workflow: face videos -> frames -> landmarks -> fits -> filtered HDF5 datasets -> fidelity reports.
# All logic lives in the `neuface` package; rules are thin shell calls of its CLI (see rules/*.smk).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"


# The sheet's own id rule (a safe file name, no "/"), not a join of all ids: a regex alternation of every
# sequence is matched against every path of every job (quadratic, minutes at 100k sequences).
wildcard_constraints:
    sequence="[A-Za-z0-9][A-Za-z0-9._-]*",
    annotator="|".join(ANNOTATORS),
    split="|".join(SPLITS),


include: "rules/assets.smk"
include: "rules/preview.smk"
include: "rules/demo.smk"
include: "rules/frames.smk"
include: "rules/landmarks.smk"
include: "rules/benchmark.smk"
include: "rules/encoder.smk"
include: "rules/fit.smk"
include: "rules/dataset.smk"
include: "rules/report.smk"
include: "rules/shards.smk"
include: "rules/train.smk"


rule all:
    input:
        all_targets(),
    default_target: True


# Last, once every rule exists: no job asks for more memory or time than scale.max_mem_mb / scale.max_runtime_min,
# however the profile's requests grow with `attempt` on retries.
cap_resources(
    workflow.rules,
    {"mem_mb": config["scale"]["max_mem_mb"], "runtime": config["scale"]["max_runtime_min"]},
)
