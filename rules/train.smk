# Applications of the packed datasets (paper section 5, docs/training.md): optional targets that run after `pack`.
#   snakemake train_regressor  -> Table 5: per-frame regression with the original and fine-tuned encoders
#   snakemake motion_prior     -> Table 4: motion priors trained on each annotator's dataset (FD, APD)
# GPU rules: they request one GPU when train.device (or cluster_device) is cuda or auto.

TRAIN = config["train"]
TRAIN_SPLIT, EVAL_SPLIT = TRAIN["train_split"], TRAIN["eval_split"]
TRAIN_DEVICE = stage_device(TRAIN["device"])
REGRESSOR_MODELS = regressor_models(TRAIN["regressor"])
PRIOR_MODELS = prior_models(TRAIN["motion_prior"])


wildcard_constraints:
    variant=REGRESSOR_VARIANT_RE,
    prior="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_]+",


rule train_regressor:
    input:
        lambda wildcards: train_inputs("regressor"),
    default_target: False


rule motion_prior:
    input:
        lambda wildcards: train_inputs("motion_prior"),
    default_target: False


rule pretrain_regressor_base:
    # train.regressor.base: builtin_2d -- the Table 5 base without 3D supervision (docs/training.md)
    input:
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        f"{RESULTS}/train/base/builtin_2d.pt",
    params:
        # the encoder.pretrain settings, but from the 2D landmark loss alone (no 3D targets) with the base's prior
        options=cli_options_of(
            {**config["encoder"]["pretrain"], "device": TRAIN_DEVICE, "param_weight": 0,
             "prior_weight": config["train"]["regressor"]["base_prior_weight"]},
            PRETRAIN_FLAGS,
        ),
    resources:
        gpu=gpu_if(TRAIN_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/base/builtin_2d.log",
    benchmark:
        f"{BENCH}/train/base/builtin_2d.tsv"
    shell:
        "neuface --log-file {log} encoder pretrain --flame {input.model} --embedding {input.embedding}"
        " --out {output} {params.options}"


rule finetune_regressor:
    input:
        dataset=f"{RESULTS}/dataset/{{annotator}}/{TRAIN_SPLIT}.h5",
        crops=lambda wildcards: stage_files_of("crops", split_sequences(TRAIN_SPLIT)),
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
        weights=regressor_base()[1],
    output:
        weights=f"{RESULTS}/train/regressor/{{annotator}}_{{variant}}.pt",
        record=f"{RESULTS}/train/regressor/{{annotator}}_{{variant}}.pt.json",
        curve=f"{RESULTS}/train/regressor/{{annotator}}_{{variant}}.curve.csv",
    params:
        crops_dir=f"{RESULTS}/crops",
        variant=lambda wildcards: REGRESSOR_VARIANT_OPTIONS[split_seed_suffix(wildcards.variant)[0]],
        encoder=regressor_base()[0],
        device=TRAIN_DEVICE,
        checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/train/regressor_{wildcards.annotator}_{wildcards.variant}.pt",
        options=lambda wildcards: regressor_train_options(wildcards.variant),
    resources:
        gpu=gpu_if(TRAIN_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/regressor/{{annotator}}_{{variant}}.log",
    benchmark:
        f"{BENCH}/train/regressor/{{annotator}}_{{variant}}.tsv"
    shell:
        "neuface --log-file {log} train regressor --dataset {input.dataset} --crops-dir {params.crops_dir}"
        " --flame {input.model} --embedding {input.embedding} --encoder {params.encoder}"
        " --encoder-weights {input.weights} {params.variant} {params.options} --device {params.device}"
        " --checkpoint {params.checkpoint} --curve {output.curve} --out {output.weights}"


rule eval_regressor:
    input:
        weights=lambda wildcards: regressor_weights(wildcards.model),
        crops=lambda wildcards: stage_files_of("crops", split_sequences(EVAL_SPLIT)),
        landmarks=lambda wildcards: stage_files_of("landmarks", split_sequences(EVAL_SPLIT)),
        gt=lambda wildcards: [g for g in map(ground_truth_of, split_sequences(EVAL_SPLIT)) if g],
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        f"{RESULTS}/train/eval/regressor/{{model}}.json",
    params:
        sheet=config["samples"],
        crops_dir=f"{RESULTS}/crops",
        landmarks_dir=f"{RESULTS}/landmarks",
        split=EVAL_SPLIT,
        encoder=regressor_base()[0],
        device=TRAIN_DEVICE,
        fits_dir=lambda wildcards: f"{RESULTS}/train/eval/regressor/fits/{wildcards.model}",
    resources:
        gpu=gpu_if(TRAIN_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/eval_regressor/{{model}}.log",
    benchmark:
        f"{BENCH}/train/eval_regressor/{{model}}.tsv"
    shell:
        "neuface --log-file {log} eval-regressor --sheet {params.sheet} --split {params.split}"
        " --crops-dir {params.crops_dir} --landmarks-dir {params.landmarks_dir} --flame {input.model} --embedding {input.embedding} --encoder {params.encoder}"
        " --encoder-weights {input.weights} --label {wildcards.model} --fits-dir {params.fits_dir}"
        " --device {params.device} --out {output}"


rule train_motion_prior:
    input:
        dataset=lambda wildcards: f"{RESULTS}/dataset/{prior_annotator(wildcards.prior)}/{TRAIN_SPLIT}.h5",
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        prior=f"{RESULTS}/train/motion_prior/{{prior}}.pt",
        curve=f"{RESULTS}/train/motion_prior/{{prior}}.curve.csv",
    params:
        subset=lambda wildcards: prior_subset_options(wildcards.prior),
        device=TRAIN_DEVICE,
        checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/train/motion_prior_{wildcards.prior}.pt",
        options=cli_options_of(
            TRAIN["motion_prior"],
            {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
             "checkpoint_every": "--checkpoint-every", "val_fraction": "--val-fraction",
             "val_every": "--val-every"},
        ),
    resources:
        gpu=gpu_if(TRAIN_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/motion_prior/{{prior}}.log",
    benchmark:
        f"{BENCH}/train/motion_prior/{{prior}}.tsv"
    shell:
        "neuface --log-file {log} train motion-prior --dataset {input.dataset} --flame {input.model}"
        " --embedding {input.embedding} {params.subset} {params.options} --device {params.device}"
        " --checkpoint {params.checkpoint} --curve {output.curve} --out {output.prior}"


rule eval_motion_prior:
    input:
        prior=f"{RESULTS}/train/motion_prior/{{prior}}.pt",
        test=f"{RESULTS}/dataset/{TRAIN['motion_prior']['test_annotator']}/{EVAL_SPLIT}.h5",
        # held-out motion of the prior's own kind: a one-step NLL where train and test motion are alike
        own_test=lambda wildcards: f"{RESULTS}/dataset/{prior_annotator(wildcards.prior)}/{EVAL_SPLIT}.h5",
        model=ASSETS["flame_model"],
        embedding=ASSETS["landmark_embedding"],
    output:
        f"{RESULTS}/train/eval/motion_prior/{{prior}}.json",
    params:
        options=cli_options_of(TRAIN["motion_prior"], {"seconds": "--seconds", "n_samples": "--n-samples",
                                                        "seed": "--seed"}),
        device=TRAIN_DEVICE,
    resources:
        gpu=gpu_if(TRAIN_DEVICE),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/eval_motion_prior/{{prior}}.log",
    benchmark:
        f"{BENCH}/train/eval_motion_prior/{{prior}}.tsv"
    shell:
        "neuface --log-file {log} prior eval --prior {input.prior} --test {input.test} --own-test {input.own_test}"
        " --flame {input.model}"
        " --embedding {input.embedding} --label {wildcards.prior} {params.options} --device {params.device}"
        " --out {output}"


rule train_report_regressor:
    input:
        expand(f"{RESULTS}/train/eval/regressor/{{model}}.json", model=REGRESSOR_MODELS),
    output:
        f"{RESULTS}/report/table5.md",
    params:
        outdir=lambda wildcards, output: str(Path(output[0]).parent),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/report/table5.log",
    benchmark:
        f"{BENCH}/report/table5.tsv"
    shell:
        "neuface --log-file {log} train-report --regressor-evals {input} --out {params.outdir}"


rule train_report_prior:
    input:
        expand(f"{RESULTS}/train/eval/motion_prior/{{prior}}.json", prior=PRIOR_MODELS),
    output:
        f"{RESULTS}/report/table4.md",
    params:
        outdir=lambda wildcards, output: str(Path(output[0]).parent),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/report/table4.log",
    benchmark:
        f"{BENCH}/report/table4.tsv"
    shell:
        "neuface --log-file {log} train-report --prior-evals {input} --out {params.outdir}"
