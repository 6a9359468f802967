rule demo_data:
    output:
        directory(DEMO_DIR),
    log:
        "logs/demo_data.log",
    benchmark:
        "benchmarks/demo_data.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        demo=CFG.demo.model_dump(mode="json"),
    script:
        "../scripts/demo_data.py"


rule ingest:
    input:
        sources=source_inputs,
    output:
        manifest=PATHS["manifest"],
        box_masks=directory(PATHS["box_masks"]),
    log:
        log="logs/{dataset}/ingest.log",
        report="logs/{dataset}/ingest_report.json",
    benchmark:
        "benchmarks/{dataset}/ingest.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        dataset_config=dataset_config,
        demo_dir=DEMO_DIR,
    script:
        "../scripts/ingest.py"
