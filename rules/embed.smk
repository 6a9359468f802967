rule embed:
    input:
        table="results/{dataset}/standardized.parquet",
    output:
        patches="results/{dataset}/embeddings/{category}/shard-{shard}.safetensors",
        images="results/{dataset}/embeddings/{category}/shard-{shard}.parquet",
    log:
        "logs/{dataset}/embed/{category}-{shard}.log",
    benchmark:
        "benchmarks/{dataset}/embed/{category}-{shard}.tsv"
    conda:
        "../envs/models.yaml"
    threads: CFG.backbone.threads
    resources:
        mem_mb=6000,
        runtime=120,
    params:
        backbone=CFG.backbone.model_dump(mode="json"),
    script:
        "../scripts/embed.py"
