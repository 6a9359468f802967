rule train:
    input:
        unpack(model_inputs),
    output:
        checkpoint="results/{dataset}/models/{model}/{category}/checkpoint.safetensors",
        card="results/{dataset}/models/{model}/{category}/model_card.json",
        crossfit="results/{dataset}/models/{model}/{category}/crossfit.parquet",
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
    params:
        rows=category_digest,
        model=model_params,
        folds=CFG.threshold.folds,
        image_size=model_image_size,
        seed=model_seed,
    script:
        "../scripts/train.py"


rule score:
    input:
        unpack(score_inputs),
        checkpoint=rules.train.output.checkpoint,
    output:
        scores="results/{dataset}/models/{model}/{category}/scores/shard-{shard}-of-{n}.scores.parquet",
        maps="results/{dataset}/models/{model}/{category}/scores/shard-{shard}-of-{n}.maps.safetensors",
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
    output:
        infer_config="results/{dataset}/models/{model}/{category}/infer_config.json",
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
