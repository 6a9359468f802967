rule fiftyone_dataset:
    input:
        table=PATHS["table"],
        preflight=PATHS["preflight"],
        predictions=lambda wc: dataset_results(wc, "predictions"),
        infer_configs=lambda wc: dataset_results(wc, "infer_config"),
        maps=all_score_maps,
        embeddings=embedding_tables,
    output:
        summary=PATHS["fiftyone"],
    log:
        "logs/{dataset}/fiftyone.log",
    benchmark:
        "benchmarks/{dataset}/fiftyone.tsv"
    conda:
        "../envs/curate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        visualization=CFG.export.fiftyone_visualization,
        seed=CFG.seed,
    script:
        "../scripts/fiftyone.py"


# `snakemake fiftyone`: every enabled dataset's FiftyOne dataset, on demand.
rule fiftyone:
    input:
        expand(PATHS["fiftyone"], dataset=DATASETS),


rule review_tasks:
    input:
        table=PATHS["table"],
        preflight=PATHS["preflight"],
        predictions=lambda wc: dataset_results(wc, "predictions"),
        infer_configs=lambda wc: dataset_results(wc, "infer_config"),
        metrics=lambda wc: dataset_results(wc, "metrics"),
        maps=all_score_maps,
    output:
        tasks=PATHS["review_tasks"],
        config=PATHS["labeling_config"],
    log:
        "logs/{dataset}/review_tasks.log",
    benchmark:
        "benchmarks/{dataset}/review_tasks.tsv"
    conda:
        "../envs/curate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        review=CFG.review.model_dump(mode="json"),
    script:
        "../scripts/review_tasks.py"


# `snakemake review`: Label Studio tasks of every enabled dataset (push them with
# `defectflow review push --dataset NAME`).
rule review:
    input:
        expand(PATHS["review_tasks"], dataset=DATASETS),
