rule backbone:
    output:
        onnx=PATHS["backbone_onnx"],
        card=PATHS["backbone_card"],
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
        table=category_table,
        onnx=PATHS["backbone_onnx"],
        card=PATHS["backbone_card"],
    output:
        patches=PATHS["patches"],
        images=PATHS["image_embeddings"],
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
        device=DEVICE,
        batch_size=CFG.backbone.batch_size,
    params:
        rows=category_digest,
    script:
        "../scripts/embed.py"


rule synthetic:
    input:
        table=category_table,
        onnx=PATHS["backbone_onnx"],
        card=PATHS["backbone_card"],
    output:
        images=directory(PATHS["synthetic_images"]),
        patches=PATHS["synthetic_patches"],
        embeddings=PATHS["synthetic_embeddings"],
    log:
        "logs/{dataset}/synthetic/{backbone}/{category}.log",
    benchmark:
        "benchmarks/{dataset}/synthetic/{backbone}/{category}.tsv"
    conda:
        "../envs/models.yaml"
    threads: CFG.backbone.threads
    resources:
        gpu=GPUS,
        mem_mb=4000,
        runtime=60,
        device=DEVICE,
        batch_size=CFG.backbone.batch_size,
    params:
        rows=category_digest,
        per_image=CFG.synthetic.per_image,
        max_images=CFG.synthetic.max_images,
        seed=CFG.seed,
    script:
        "../scripts/synthetic.py"
