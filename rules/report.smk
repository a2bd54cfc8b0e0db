# Fidelity metrics per (annotator, sequence) and the paper-style report (tables, plots, overlay videos).


rule metrics:
    input:
        unpack(metrics_inputs),
    output:
        f"{RESULTS}/metrics/{{annotator}}/{{sequence}}.json",
    params:
        gt=lambda wildcards, input: f"--gt {input.gt} --frames {input.frames}" if "gt" in input.keys() else "",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/metrics/{{annotator}}/{{sequence}}.log",
    benchmark:
        f"{BENCH}/metrics/{{annotator}}/{{sequence}}.tsv"
    shell:
        "neuface --log-file {log} metrics --fit {input.fit} --flame {input.model} --embedding {input.embedding}"
        " {params.gt} --out {output}"


rule report:
    input:
        metrics=all_metrics(),
        manifests=expand(f"{RESULTS}/filter/{{annotator}}.tsv", annotator=ANNOTATORS),
        overlay_fits=[f for a in OVERLAY_ANNOTATORS for f in fits_of(a, OVERLAY_SEQUENCES)],
        overlay_frames=[f for a in OVERLAY_ANNOTATORS for f in frames_of(OVERLAY_SEQUENCES)],
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        table2=report(f"{RESULTS}/report/table2.md", caption="../src/neuface/report/captions/table2.rst",
                      category="Tables"),
        table3=report(f"{RESULTS}/report/table3.md", caption="../src/neuface/report/captions/table3.rst",
                      category="Tables"),
        cvd=report(f"{RESULTS}/report/cvd_per_view.png",
                   caption="../src/neuface/report/captions/cvd_per_view.rst", category="Plots"),
        msi=report(f"{RESULTS}/report/msi_distribution.png",
                   caption="../src/neuface/report/captions/msi_distribution.rst", category="Plots"),
        index=f"{RESULTS}/report/index.md",
    params:
        outdir=lambda wildcards, output: str(Path(output.index).parent),
        metrics_dir=lambda wildcards, input: (
            f"{RESULTS}/metrics" if SHARD_SIZE else str(Path(input.metrics[0]).parent.parent)
        ),
        sheet=config["samples"],
        table2=" ".join(config["report"]["table2"]),
        table3=" ".join(config["report"]["table3"]),
        fits=lambda wildcards, input: " ".join(f for f, _ in overlay_fit_and_frames(input)),
        overlays=lambda wildcards, input: " ".join(
            f"--overlay-fit {f} --overlay-frames {h}" for f, h in overlay_fit_and_frames(input)
        ),
        options=cli_options("report", {"split": "--split", "overlay_max_frames": "--overlay-max-frames",
                                       "overlay_size": "--overlay-size"}),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report/report.tsv"
    shell:
        "neuface --log-file {log} report --metrics {params.metrics_dir} --sheet {params.sheet} --out {params.outdir}"
        " --annotators {params.table2} --variants {params.table3} --fits {params.fits} {params.overlays}"
        " --flame {input.model} --embedding {input.embedding} --filter-manifests {input.manifests}"
        " {params.options}"
