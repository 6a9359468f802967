rule metrics:
    input:
        predictions=expand(
            "results/{{dataset}}/models/{model}/{{category}}/predictions.jsonl",
            model=MODELS,
        ),
        maps=expand(
            "results/{{dataset}}/models/{model}/{{category}}/maps.safetensors",
            model=MODELS,
        ),
        infer_configs=expand(
            "results/{{dataset}}/models/{model}/{{category}}/infer_config.json",
            model=MODELS,
        ),
        table="results/{dataset}/standardized.parquet",
    output:
        metrics=expand(
            "results/{{dataset}}/models/{model}/{{category}}/metrics.json",
            model=MODELS,
        ),
    log:
        "logs/{dataset}/metrics/{category}.log",
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        models=MODELS,
    script:
        "../scripts/metrics.py"


rule report:
    input:
        metrics=lambda wc: dataset_results(wc, "metrics.json"),
        predictions=lambda wc: dataset_results(wc, "predictions.jsonl"),
        infer_configs=lambda wc: dataset_results(wc, "infer_config.json"),
        preflight="results/{dataset}/preflight.json",
        memory="results/{dataset}/preflight_memory.json",
        onnx=onnx_targets,
    output:
        report="results/{dataset}/report.html",
    log:
        "logs/{dataset}/report.log",
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/report.py"
