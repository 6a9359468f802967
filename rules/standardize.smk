checkpoint standardize:
    input:
        manifest="results/{dataset}/manifest.jsonl",
        report="results/{dataset}/preflight.json",
        facts="results/{dataset}/image_facts.parquet",
    output:
        table="results/{dataset}/standardized.parquet",
    log:
        "logs/{dataset}/standardize.log",
    benchmark:
        "benchmarks/{dataset}/standardize.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        split=lambda wildcards: CFG.split_for(wildcards.dataset).model_dump(mode="json"),
    script:
        "../scripts/standardize.py"
