# The builtin encoder, pre-trained on renders of the configured head model. Defined only when the config asks
# for it, so a user's DECA/EMOCA weights file can never be the output of a rule.

if config["encoder"]["kind"] == "builtin":

    rule encoder_pretrain:
        input:
            model=ASSETS["flame_model"],
            embedding=ASSETS["landmark_embedding"],
        output:
            config["encoder"]["weights"],
        params:
            options=cli_options_of({**config["encoder"]["pretrain"], "device": PRETRAIN_DEVICE}, PRETRAIN_FLAGS),
        resources:
            gpu=gpu_if(PRETRAIN_DEVICE),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/encoder/pretrain.log",
        benchmark:
            f"{BENCH}/encoder/pretrain.tsv"
        shell:
            "neuface --log-file {log} encoder pretrain --flame {input.model} --embedding {input.embedding}"
            " --out {output} {params.options}"
