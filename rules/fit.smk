# Fitting: one job per (annotator, sequence). Annotators are wildcard values (neuface, regress, flamefit and
# named variants), so one DAG builds them side by side. GPU rule: requests one GPU when its device (fitting.device,
# or cluster_device in cluster runs: profiles/slurm sets auto) is cuda or auto; the job resolves auto itself.


rule fit:
    wildcard_constraints:
        annotator=ENCODER_ANNOTATORS_RE,
    input:
        crops=f"{RESULTS}/crops/{{sequence}}.h5",
        landmarks=f"{RESULTS}/landmarks/{{sequence}}.h5",
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
        weights=config["encoder"]["weights"],
    output:
        f"{RESULTS}/fits/{{annotator}}/{{sequence}}.h5",
    params:
        settings=lambda wildcards: annotator_settings_json(wildcards.annotator),
        # the settings with the package's defaults: a changed default re-runs the fits (params trigger)
        resolved=lambda wildcards: resolved_settings_hash(config, wildcards.annotator),
        encoder=config["encoder"]["kind"],
        device=FIT_DEVICE,
        checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/{wildcards.annotator}/{wildcards.sequence}.pt",
    resources:
        gpu=gpu_if(FIT_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/fit/{{annotator}}/{{sequence}}.log",
    benchmark:
        f"{BENCH}/fit/{{annotator}}/{{sequence}}.tsv"
    shell:
        "neuface --log-file {log} fit --crops {input.crops} --landmarks {input.landmarks}"
        " --flame {input.model} --embedding {input.embedding} --annotator {wildcards.annotator}"
        " --settings '{params.settings}' --encoder {params.encoder} --encoder-weights {input.weights}"
        " --device {params.device} --checkpoint {params.checkpoint} --out {output}"


# The `gt` annotator (method groundtruth; synthetic sequences): the sequence's true parameters written as its fit.
# A rule of its own, so `fit`'s command (and with it every existing fit) is untouched by it.
rule fit_groundtruth:
    wildcard_constraints:
        annotator=GT_ANNOTATORS_RE,
    input:
        crops=f"{RESULTS}/crops/{{sequence}}.h5",
        landmarks=f"{RESULTS}/landmarks/{{sequence}}.h5",
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
        gt=fit_ground_truth,
    output:
        f"{RESULTS}/fits/{{annotator}}/{{sequence}}.h5",
    params:
        settings=lambda wildcards: annotator_settings_json(wildcards.annotator),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/fit/{{annotator}}/{{sequence}}.log",
    benchmark:
        f"{BENCH}/fit/{{annotator}}/{{sequence}}.tsv"
    shell:
        "neuface --log-file {log} fit --crops {input.crops} --landmarks {input.landmarks}"
        " --flame {input.model} --embedding {input.embedding} --annotator {wildcards.annotator}"
        " --settings '{params.settings}' --ground-truth {input.gt} --device cpu --out {output}"
