rule preflight:
    input:
        manifest=PATHS["manifest"],
    output:
        report=PATHS["preflight"],
        facts=PATHS["image_facts"],
    log:
        log="logs/{dataset}/preflight.log",
        report="logs/{dataset}/preflight_report.json",
    benchmark:
        "benchmarks/{dataset}/preflight.tsv"
    conda:
        "../envs/core.yaml"
    threads: preflight_threads
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        checks=CFG.preflight.result_params(),
    script:
        "../scripts/preflight.py"


rule preflight_memory:
    input:
        preflight=rules.preflight.output.report,
        backbones=BACKBONE_CARDS,
    output:
        report=PATHS["preflight_memory"],
    log:
        "logs/{dataset}/preflight_memory.log",
    benchmark:
        "benchmarks/{dataset}/preflight_memory.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        models={name: m.model_dump(mode="json") for name, m in CFG.models.items()},
        default_backbone=BACKBONE,
        max_memory_mb=CFG.preflight.max_memory_mb,
        severity=CFG.preflight.model_dump(mode="json")["severity"],
    script:
        "../scripts/preflight_memory.py"
