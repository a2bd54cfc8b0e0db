# Frame extraction: every view of a sequence decoded (PyAV/ffmpeg) into one HDF5 container per sequence.
# Bad input (missing/corrupt/empty video, view mismatch) gives a file with a failed status, not a DAG failure.


rule frames:
    input:
        video_inputs,
    output:
        f"{RESULTS}/frames/{{sequence}}.h5",
    params:
        sheet=config["samples"],
        options=cli_options(
            "frames",
            {"fps": "--fps", "max_frames": "--max-frames", "max_size": "--max-size",
             "on_view_error": "--on-view-error", "compression": "--compression"},
        ),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/frames/{{sequence}}.log",
    benchmark:
        f"{BENCH}/frames/{{sequence}}.tsv"
    shell:
        "neuface --log-file {log} frames --sheet {params.sheet} --sequence {wildcards.sequence}"
        " --out {output} {params.options}"
