# Sharded stages (config scale.shard_size = K > 0): one job per (stage, shard of K sequences) instead of one per
# (stage, sequence), so a million clips plan as ~9 N / K jobs. Each job runs the stage's usual per-sequence command
# for every sequence of its shard via `neuface shard` (in one process, failures isolated, finished sequences
# reused on a rerun); per-sequence outputs keep their usual paths and the job's output is a marker TSV.
# `{{sequence}}`, `{{output}}`, `{{shard_sheet}}`, `{{dataset_views}}`, `{{ground_truth}}` are filled per sequence
# by `neuface shard` (neuface.shards.ShardTask).

FRAMES_OF = per_sequence("frames")
LANDMARKS_OF = per_sequence("landmarks")
CROPS_OF = per_sequence("crops")
FIT_OF = per_sequence("fits", per_annotator=True)
CHECKPOINT_OF = per_sequence("checkpoints", "pt", per_annotator=True)
METRICS_OF = per_sequence("metrics", "json", per_annotator=True)


wildcard_constraints:
    shard="shard-[0-9]+",


rule frames_shard:
    input:
        shard_videos,
    output:
        f"{RESULTS}/shards/frames/{{shard}}.tsv",
    params:
        shard=shard_options(FRAMES_OF, sheet_inputs=True),
        options=rules.frames.params.options,
        rows=shard_rows_digest,
    resources:
        runtime=shard_runtime("frames"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/shards/frames/{{shard}}.log",
    benchmark:
        f"{BENCH}/shards/frames/{{shard}}.tsv"
    shell:
        "neuface --log-file {log} shard {params.shard} --marker {output} --"
        " frames --sheet {{shard_sheet}} --sequence {{sequence}} --expected-views {{dataset_views}} --out {{output}}"
        " {params.options}"


if not BENCHMARK:

    rule landmarks_shard:
        input:
            shard_marker("frames"),
        output:
            f"{RESULTS}/shards/landmarks/{{shard}}.tsv",
        params:
            shard=shard_options(LANDMARKS_OF, inputs=[FRAMES_OF]),
            frames=FRAMES_OF,
            options=rules.landmarks.params.options,
        resources:
            runtime=shard_runtime("landmarks"),
            gpu=gpu_if(LANDMARKS_DEVICE),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/shards/landmarks/{{shard}}.log",
        benchmark:
            f"{BENCH}/shards/landmarks/{{shard}}.tsv"
        shell:
            "neuface --log-file {log} shard {params.shard} --marker {output} --"
            " landmarks --frames '{params.frames}' --out {{output}} {params.options}"


rule crops_shard:
    input:
        frames=shard_marker("frames"),
        landmarks=shard_marker("landmarks"),
    output:
        f"{RESULTS}/shards/crops/{{shard}}.tsv",
    params:
        shard=shard_options(CROPS_OF, inputs=[FRAMES_OF, LANDMARKS_OF]),
        frames=FRAMES_OF,
        landmarks=LANDMARKS_OF,
        options=rules.crops.params.options,
    resources:
        runtime=shard_runtime("crops"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/shards/crops/{{shard}}.log",
    benchmark:
        f"{BENCH}/shards/crops/{{shard}}.tsv"
    shell:
        "neuface --log-file {log} shard {params.shard} --marker {output} --"
        " crops --frames '{params.frames}' --landmarks '{params.landmarks}' --out {{output}} {params.options}"


rule fit_shard:
    input:
        crops=shard_marker("crops"),
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
        weights=config["encoder"]["weights"],
    output:
        f"{RESULTS}/shards/fit/{{annotator}}/{{shard}}.tsv",
    params:
        shard=shard_options(FIT_OF, inputs=[CROPS_OF, LANDMARKS_OF]),
        crops=CROPS_OF,
        landmarks=LANDMARKS_OF,
        checkpoint=CHECKPOINT_OF,
        settings=rules.fit.params.settings,
        resolved=rules.fit.params.resolved,
        encoder=config["encoder"]["kind"],
        device=FIT_DEVICE,
        batch=config["fitting"]["clips_per_batch"],
    resources:
        runtime=shard_runtime("fit"),
        # K clips in memory at once (crops of each, K copies of the weights and optimizer state)
        mem_mb=lambda wildcards, attempt: (16000 + 4000 * (config["fitting"]["clips_per_batch"] - 1))
        * 2 ** (attempt - 1),
        gpu=gpu_if(FIT_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/shards/fit/{{annotator}}/{{shard}}.log",
    benchmark:
        f"{BENCH}/shards/fit/{{annotator}}/{{shard}}.tsv"
    shell:
        "neuface --log-file {log} shard {params.shard} --marker {output} --batch {params.batch}"
        " --fingerprint-extra {params.resolved} --"
        " fit --crops '{params.crops}' --landmarks '{params.landmarks}'"
        " --flame {input.model} --embedding {input.embedding} --annotator {wildcards.annotator}"
        " --settings '{params.settings}' --encoder {params.encoder} --encoder-weights {input.weights}"
        " --device {params.device} --checkpoint '{params.checkpoint}' --out {{output}}"


rule metrics_shard:
    input:
        fits=shard_marker("fit", per_annotator=True),
        frames=shard_marker("frames"),
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        f"{RESULTS}/shards/metrics/{{annotator}}/{{shard}}.tsv",
    params:
        shard=shard_options(METRICS_OF, inputs=[FIT_OF], sheet_inputs=True),
        fit=FIT_OF,
        frames=FRAMES_OF,
    resources:
        runtime=shard_runtime("metrics"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/shards/metrics/{{annotator}}/{{shard}}.log",
    benchmark:
        f"{BENCH}/shards/metrics/{{annotator}}/{{shard}}.tsv"
    shell:
        "neuface --log-file {log} shard {params.shard} --marker {output} --"
        " metrics --fit '{params.fit}' --flame {input.model} --embedding {input.embedding}"
        " --gt {{ground_truth}} --frames '{params.frames}' --out {{output}}"
