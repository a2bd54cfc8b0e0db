# neuface workflow: face videos -> frames -> landmarks -> fits -> filtered HDF5 datasets -> fidelity reports.
# All logic lives in the `neuface` package; rules are thin shell calls of its CLI (see rules/*.smk).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/assets.smk"
include: "rules/preview.smk"
include: "rules/demo.smk"
include: "rules/frames.smk"
include: "rules/landmarks.smk"


rule all:
    input:
        all_targets(),
    default_target: True
