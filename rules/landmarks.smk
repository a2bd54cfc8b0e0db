# 68-point landmark detection of one tracked face per frame and view (FAN on GPU, or dlib offline), with shot and
# identity segmentation (landmarks.shots), then DECA-style 224x224 crops with their transforms.


if not BENCHMARK:  # the synthetic benchmark replaces detection by ground truth + noise (rules/benchmark.smk)

    rule landmarks:
        input:
            f"{RESULTS}/frames/{{sequence}}.h5",
        output:
            f"{RESULTS}/landmarks/{{sequence}}.h5",
        params:
            options=cli_options_of(
                {**config["landmarks"], "device": LANDMARKS_DEVICE},
                {"backend": "--backend", "device": "--device", "batch_size": "--batch-size",
                 "min_score": "--min-score", "det_size": "--det-size"},
            )
            + " "
            + shot_options(config["landmarks"].get("shots", {})),
        resources:
            gpu=gpu_if(LANDMARKS_DEVICE),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/landmarks/{{sequence}}.log",
        benchmark:
            f"{BENCH}/landmarks/{{sequence}}.tsv"
        shell:
            "neuface --log-file {log} landmarks --frames {input} --out {output} {params.options}"


rule crops:
    input:
        frames=f"{RESULTS}/frames/{{sequence}}.h5",
        landmarks=f"{RESULTS}/landmarks/{{sequence}}.h5",
    output:
        f"{RESULTS}/crops/{{sequence}}.h5",
    params:
        options=cli_options("crops", {"size": "--size", "scale": "--scale", "smooth_window": "--smooth-window"}),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/crops/{{sequence}}.log",
    benchmark:
        f"{BENCH}/crops/{{sequence}}.tsv"
    shell:
        "neuface --log-file {log} crops --frames {input.frames} --landmarks {input.landmarks}"
        " --out {output} {params.options}"
