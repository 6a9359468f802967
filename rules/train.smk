rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint="results/{dataset}/models/{model}/{category}/checkpoint.safetensors",
        card="results/{dataset}/models/{model}/{category}/model_card.json",
    log:
        "logs/{dataset}/train/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/train/{model}-{category}.tsv"
    conda:
        "../envs/models.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        model=model_params,
        image_size=CFG.backbone.image_size,
        seed=CFG.seed,
    script:
        "../scripts/train.py"


rule calibrate:
    input:
        unpack(calibrate_inputs),
        checkpoint="results/{dataset}/models/{model}/{category}/checkpoint.safetensors",
    output:
        infer_config="results/{dataset}/models/{model}/{category}/infer_config.json",
    log:
        "logs/{dataset}/calibrate/{model}-{category}.log",
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        backbone=CFG.backbone.model_dump(mode="json"),
        threshold=CFG.threshold.model_dump(mode="json"),
        seed=CFG.seed,
    script:
        "../scripts/calibrate.py"
