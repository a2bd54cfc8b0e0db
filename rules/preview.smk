# A rendered contact sheet of the configured head model (neutral, turned, talking) with its 68 landmarks.


rule preview_head:
    input:
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        png=f"{RESULTS}/preview/head_model.png",
    params:
        size=config["preview"]["image_size"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/preview/head_model.log",
    benchmark:
        f"{BENCH}/preview/head_model.tsv"
    shell:
        "neuface --log-file {log} render preview --flame {input.model} --embedding {input.embedding}"
        " --size {params.size} --out {output.png}"
