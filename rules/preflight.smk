rule preflight:
    input:
        manifest="results/{dataset}/manifest.jsonl",
        backbone=BACKBONE_FILES["card"],
    output:
        report="results/{dataset}/preflight.json",
        facts="results/{dataset}/image_facts.parquet",
    log:
        log="logs/{dataset}/preflight.log",
        report="logs/{dataset}/preflight_report.json",
    benchmark:
        "benchmarks/{dataset}/preflight.tsv"
    conda:
        "../envs/core.yaml"
    threads: CFG.preflight.threads
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        checks=CFG.preflight.result_params(),
        models={name: m.model_dump(mode="json") for name, m in CFG.models.items()},
    script:
        "../scripts/preflight.py"
