rule backbone:
    output:
        onnx="results/backbones/{backbone}/backbone.onnx",
        card="results/backbones/{backbone}/backbone.json",
    log:
        "logs/backbones/{backbone}.log",
    benchmark:
        "benchmarks/backbones/{backbone}.tsv"
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        backbone=lambda wc: CFG.backbones[wc.backbone].result_params(),
    script:
        "../scripts/export_backbone.py"


rule embed:
    input:
        table=ancient("results/{dataset}/standardized.parquet"),
        onnx="results/backbones/{backbone}/backbone.onnx",
        card="results/backbones/{backbone}/backbone.json",
    output:
        patches="results/{dataset}/embeddings/{backbone}/{category}/shard-{shard}-of-{n}.safetensors",
        images="results/{dataset}/embeddings/{backbone}/{category}/shard-{shard}-of-{n}.parquet",
    log:
        "logs/{dataset}/embed/{backbone}/{category}-{shard}-of-{n}.log",
    benchmark:
        "benchmarks/{dataset}/embed/{backbone}/{category}-{shard}-of-{n}.tsv"
    conda:
        "../envs/models.yaml"
    threads: CFG.backbone.threads
    resources:
        gpu=GPUS,
        mem_mb=4000,
        runtime=120,
    params:
        rows=category_digest,
    script:
        "../scripts/embed.py"
