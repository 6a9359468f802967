rule predict:
    input:
        infer_config="results/{dataset}/models/{model}/{category}/infer_config.json",
        checkpoint="results/{dataset}/models/{model}/{category}/checkpoint.safetensors",
        table="results/{dataset}/standardized.parquet",
    output:
        predictions="results/{dataset}/models/{model}/{category}/predictions.jsonl",
        maps="results/{dataset}/models/{model}/{category}/maps.safetensors",
        heatmaps=directory("results/{dataset}/models/{model}/{category}/maps"),
    log:
        "logs/{dataset}/predict/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/predict/{model}-{category}.tsv"
    conda:
        "../envs/models.yaml"
    threads: CFG.backbone.threads
    resources:
        mem_mb=6000,
        runtime=120,
    params:
        batch_size=CFG.backbone.batch_size,
    script:
        "../scripts/predict.py"


rule export_onnx:
    input:
        infer_config="results/{dataset}/models/{model}/{category}/infer_config.json",
        checkpoint="results/{dataset}/models/{model}/{category}/checkpoint.safetensors",
        table="results/{dataset}/standardized.parquet",
    output:
        model="results/{dataset}/models/{model}/{category}/model.onnx",
        parity="results/{dataset}/models/{model}/{category}/onnx_parity.json",
    log:
        "logs/{dataset}/export_onnx/{model}-{category}.log",
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        tolerance=CFG.export.onnx_tolerance,
    script:
        "../scripts/export_onnx.py"
