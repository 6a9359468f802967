rule train:
    input:
        unpack(model_inputs),
    output:
        checkpoint=PATHS["checkpoint"],
        card=PATHS["model_card"],
        crossfit=PATHS["crossfit"],
        synthetic=PATHS["synthetic_scores"],
    log:
        "logs/{dataset}/train/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/train/{model}-{category}.tsv"
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=train_mem_mb,
        runtime=120,
        device=DEVICE,
    params:
        rows=category_digest,
        model=model_params,
        folds=CFG.threshold.folds,
        leave_one_out=CFG.threshold.leave_one_out,
        image_size=model_image_size,
        seed=model_seed,
    script:
        "../scripts/train.py"


rule score:
    input:
        unpack(score_inputs),
        checkpoint=rules.train.output.checkpoint,
    output:
        scores=PATHS["scores"],
        maps=PATHS["maps"],
    log:
        "logs/{dataset}/score/{model}-{category}-{shard}-of-{n}.log",
    benchmark:
        "benchmarks/{dataset}/score/{model}-{category}-{shard}-of-{n}.tsv"
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=6000,
        runtime=120,
        device=DEVICE,
    params:
        rows=category_digest,
        out_size=model_out_size,
        sigma=CFG.maps.sigma,
    script:
        "../scripts/score.py"


rule calibrate:
    input:
        unpack(backbone_inputs),
        crossfit=rules.train.output.crossfit,
        checkpoint=rules.train.output.checkpoint,
        synthetic=rules.train.output.synthetic,
    output:
        infer_config=PATHS["infer_config"],
    log:
        "logs/{dataset}/calibrate/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/calibrate/{model}-{category}.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        threshold=CFG.threshold.model_dump(mode="json"),
        map_sigma=CFG.maps.sigma,
        seed=model_seed,
    script:
        "../scripts/calibrate.py"
