# How many good images are enough (`snakemake learning_curve`; in the report with
# `learning_curve: {in_report: true}`): each feature model refitted on nested subsets of the
# training normals from the stored features. Train and val only: no test label is read.
rule learning_curve_category:
    input:
        unpack(model_inputs),
    output:
        curve=PATHS["learning_curve"],
    log:
        "logs/{dataset}/learning_curve/{model}-{category}.log",
    benchmark:
        "benchmarks/{dataset}/learning_curve/{model}-{category}.tsv"
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=120,
    params:
        rows=category_digest,
        model=model_params,
        seed=model_seed,
        start=CFG.learning_curve.start,
    script:
        "../scripts/learning_curve.py"


rule learning_curve_page:
    input:
        curves=learning_curve_files,
    output:
        page=PATHS["learning_curve_page"],
    log:
        "logs/{dataset}/learning_curve_page.log",
    benchmark:
        "benchmarks/{dataset}/learning_curve_page.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/learning_curve_page.py"


rule learning_curve:
    input:
        expand(PATHS["learning_curve_page"], dataset=DATASETS),
