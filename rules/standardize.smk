checkpoint standardize:
    input:
        manifest=PATHS["manifest"],
        report=PATHS["preflight"],
        facts=PATHS["image_facts"],
    output:
        table=PATHS["table"],
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
