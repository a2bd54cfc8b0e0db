# Filtering (accept/reject with reasons, a manifest line for every sequence) and one HDF5 per split/annotator.


rule filter:
    input:
        fits=lambda wildcards: fits_of(wildcards.annotator),
    output:
        f"{RESULTS}/filter/{{annotator}}.tsv",
    params:
        sheet=config["samples"],
        fit_dir=lambda wildcards: f"{RESULTS}/fits/{wildcards.annotator}",
        options=cli_options(
            "filter",
            {"max_shape_norm": "--max-shape-norm", "max_missing_frac": "--max-missing-frac",
             "max_nme": "--max-nme", "min_frames": "--min-frames", "partial_inputs": "--partial-inputs"},
        ),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/filter/{{annotator}}.log",
    benchmark:
        f"{BENCH}/filter/{{annotator}}.tsv"
    shell:
        "neuface --log-file {log} filter --fit-dir {params.fit_dir} --sheet {params.sheet}"
        " --annotator {wildcards.annotator} --out {output} {params.options}"


rule pack:
    input:
        manifest=f"{RESULTS}/filter/{{annotator}}.tsv",
        model=ASSETS["flame_model"],
    output:
        f"{RESULTS}/dataset/{{annotator}}/{{split}}.h5",
    params:
        compression=config["dataset"]["compression"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/pack/{{annotator}}/{{split}}.log",
    benchmark:
        f"{BENCH}/pack/{{annotator}}/{{split}}.tsv"
    shell:
        "neuface --log-file {log} pack --manifest {input.manifest} --split {wildcards.split} --out {output}"
        " --flame {input.model} --annotator {wildcards.annotator} --compression {params.compression}"
