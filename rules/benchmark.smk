# Synthetic ground-truth benchmark (config/benchmark/config.yaml): sequences rendered from the configured head
# model with known parameters; landmarks are the ground truth plus a detector-like noise model, so the rest of
# the DAG (crops, fits, filter, metrics, report) runs unchanged and the report gains MPVE.
# The sheet's paths pick the rig: <dir>/mead/<sequence>/<view>.mp4 (7 views) or <dir>/mono/<sequence>/front.mp4.
# benchmark.neck_deg > 0 renders neck motion, which no annotator fits (the robustness case; default 0).

if BENCHMARK:
    MEAD_VIEWS_ORDER = ["front", "down", "top", "left_30", "left_60", "right_30", "right_60"]

    rule benchmark_synth_mead:
        input:
            model=ASSETS["flame_model"],
            embedding=ASSETS["landmark_embedding"],
        output:
            videos=expand(f"{BENCHMARK['dir']}/mead/{{{{sequence}}}}/{{view}}.mp4", view=MEAD_VIEWS_ORDER),
            gt=f"{BENCHMARK['dir']}/mead/{{sequence}}/gt.npz",
        params:
            pattern=lambda wildcards, output: str(Path(output.gt).parent / "{view}.mp4"),
            seed=lambda wildcards: sequence_seed(wildcards.sequence),
            options=cli_options_of(
                BENCHMARK, {"frames": "--frames", "size": "--size", "fps": "--fps", "neck_deg": "--neck-deg"}
            ),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/benchmark/synth/{{sequence}}.log",
        benchmark:
            f"{BENCH}/benchmark/synth/{{sequence}}.tsv"
        shell:
            "neuface --log-file {log} synth --rig mead --flame {input.model} --embedding {input.embedding}"
            " --video '{params.pattern}' --gt {output.gt} --seed {params.seed} {params.options}"

    rule benchmark_synth_mono:
        input:
            model=ASSETS["flame_model"],
            embedding=ASSETS["landmark_embedding"],
        output:
            video=f"{BENCHMARK['dir']}/mono/{{sequence}}/front.mp4",
            gt=f"{BENCHMARK['dir']}/mono/{{sequence}}/gt.npz",
        params:
            seed=lambda wildcards: sequence_seed(wildcards.sequence),
            options=cli_options_of(
                BENCHMARK, {"frames": "--frames", "size": "--size", "fps": "--fps", "neck_deg": "--neck-deg"}
            ),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/benchmark/synth/{{sequence}}.log",
        benchmark:
            f"{BENCH}/benchmark/synth/{{sequence}}.tsv"
        shell:
            "neuface --log-file {log} synth --rig mono --flame {input.model} --embedding {input.embedding}"
            " --video {output.video} --gt {output.gt} --seed {params.seed} {params.options}"

    rule landmarks_from_gt:
        input:
            frames=f"{RESULTS}/frames/{{sequence}}.h5",
            gt=lambda wildcards: ground_truth_of(wildcards.sequence),
        output:
            f"{RESULTS}/landmarks/{{sequence}}.h5",
        params:
            noise=json.dumps(BENCHMARK["noise"], sort_keys=True, separators=(",", ":")),
            seed=lambda wildcards: BENCHMARK["noise_seed"] + sequence_seed(wildcards.sequence),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/landmarks/{{sequence}}.log",
        benchmark:
            f"{BENCH}/landmarks/{{sequence}}.tsv"
        shell:
            "neuface --log-file {log} landmarks-from-gt --gt {input.gt} --frames {input.frames} --out {output}"
            " --noise-json '{params.noise}' --seed {params.seed}"
