rule metrics:
    input:
        predictions=rules.predict.output.predictions,
        maps=lambda wc: score_files(wc, "maps"),
        infer_config=rules.calibrate.output.infer_config,
        crossfit=rules.train.output.crossfit,
        table=category_table,
    output:
        metrics=report(
            PATHS["metrics"],
            caption="captions/metrics.rst",
            category="Metrics",
            subcategory="{category}",
            labels={"model": "{model}", "category": "{category}"},
        ),
    log:
        "logs/{dataset}/metrics/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/metrics/{model}-{category}.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        rows=category_digest,
    script:
        "../scripts/metrics.py"


rule report:
    input:
        metrics=lambda wc: dataset_results(wc, "metrics"),
        predictions=lambda wc: dataset_results(wc, "predictions"),
        infer_configs=lambda wc: dataset_results(wc, "infer_config"),
        preflight=PATHS["preflight"],
        memory=PATHS["preflight_memory"],
        leaderboard=PATHS["leaderboard"],
        table=PATHS["table"],
        onnx=onnx_targets,
        curves=lambda wc: learning_curve_files(wc, wanted=CFG.learning_curve.in_report),
    output:
        report=report(
            PATHS["report"],
            caption="captions/report.rst",
            category="Report",
        ),
    log:
        "logs/{dataset}/report.log",
    benchmark:
        "benchmarks/{dataset}/report.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/report.py"


rule leaderboard:
    input:
        metrics=lambda wc: dataset_results(wc, "metrics"),
    output:
        parquet=PATHS["leaderboard"],
        csv=report(
            PATHS["leaderboard_csv"],
            caption="captions/leaderboard.rst",
            category="Leaderboard",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/{dataset}/leaderboard.log",
    benchmark:
        "benchmarks/{dataset}/leaderboard.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/leaderboard.py"


# Appends this run's leaderboard rows to runs/registry.parquet (whenever a leaderboard changed).
rule register_run:
    input:
        leaderboards=expand(PATHS["leaderboard"], dataset=DATASETS),
        manifests=expand(PATHS["manifest"], dataset=DATASETS),
        cards=BACKBONE_CARDS,
    output:
        run=PATHS["run"],
    log:
        "logs/register_run.log",
    benchmark:
        "benchmarks/register_run.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/register_run.py"
