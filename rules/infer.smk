rule predict:
    input:
        infer_config=rules.calibrate.output.infer_config,
        scores=lambda wc: score_files(wc, "scores"),
        maps=lambda wc: score_files(wc, "maps"),
        table=category_table,
    output:
        predictions=PATHS["predictions"],
        heatmaps=directory(PATHS["heatmaps"]),
    log:
        "logs/{dataset}/predict/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/predict/{model}-{category}.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        rows=category_digest,
    script:
        "../scripts/predict.py"


rule export_onnx:
    input:
        infer_config=rules.calibrate.output.infer_config,
        checkpoint=rules.train.output.checkpoint,
        table=category_table,
    output:
        model=PATHS["model_onnx"],
        parity=PATHS["onnx_parity"],
    log:
        "logs/{dataset}/export_onnx/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/export_onnx/{model}-{category}.tsv"
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        rows=category_digest,
        tolerance=CFG.export.onnx_tolerance,
    script:
        "../scripts/export_onnx.py"
