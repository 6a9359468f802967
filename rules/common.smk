from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from defectflow.config import parse_config
from defectflow.errors import ConfigError
from defectflow.ingest import DEMO_DIR
from defectflow.sharding import FIT_SPLITS, n_shards

try:
    CFG = parse_config(
        config, where="config (config/config.yaml and --config/--configfile)"
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

validate(
    CFG.model_dump(mode="json"), "../schemas/config.schema.json", set_default=False
)

DATASETS = CFG.active_datasets


wildcard_constraints:
    dataset="|".join(DATASETS),


def dataset_config(wildcards):
    """The dataset's part of the config (a param: ingest reruns when it changes)."""
    return CFG.datasets[wildcards.dataset].model_dump(mode="json")


def source_inputs(wildcards):
    """Files and folders the dataset's sources read (the demo data folder for `demo`)."""
    paths = []
    for src in CFG.datasets[wildcards.dataset].sources:
        paths.append(DEMO_DIR if src.type == "demo" else src.path)
    return sorted(set(paths))


def all_targets():
    return expand("results/{dataset}/report.html", dataset=DATASETS)


MODELS = sorted(CFG.models)


wildcard_constraints:
    model="|".join(MODELS),
    category="[^/]+",
    shard=r"\d+",


def fit_counts(dataset):
    """Category -> number of train+val images, read from the standardize checkpoint."""
    from collections import Counter

    import pyarrow.parquet as pq

    table = checkpoints.standardize.get(dataset=dataset).output.table
    cols = pq.read_table(table, columns=["category", "split"]).to_pydict()
    fit = Counter(c for c, s in zip(cols["category"], cols["split"]) if s in FIT_SPLITS)
    return {c: fit.get(c, 0) for c in sorted(set(cols["category"]))}


def embedding_files(wildcards):
    n = fit_counts(wildcards.dataset)[wildcards.category]
    shards = range(n_shards(n, CFG.backbone.shard_size))
    base = f"results/{wildcards.dataset}/embeddings/{wildcards.category}/shard-"
    return {
        "patches": [f"{base}{i:03d}.safetensors" for i in shards],
        "images": [f"{base}{i:03d}.parquet" for i in shards],
    }


def train_inputs(wildcards):
    """Embedding backends fit on stored features; anomalib trains from the images."""
    if CFG.models[wildcards.model].backend == "anomalib":
        return {"table": f"results/{wildcards.dataset}/standardized.parquet"}
    return embedding_files(wildcards)


def calibrate_inputs(wildcards):
    files = train_inputs(wildcards)
    files["table"] = f"results/{wildcards.dataset}/standardized.parquet"
    return files


def model_params(wildcards):
    return CFG.models[wildcards.model].model_dump(mode="json")


def dataset_results(wildcards, name):
    """One file per model x category of a dataset (after the standardize checkpoint)."""
    cats = fit_counts(wildcards.dataset)
    return [
        f"results/{wildcards.dataset}/models/{m}/{c}/{name}"
        for c in cats
        for m in MODELS
    ]


def onnx_targets(wildcards):
    """ONNX exports (with their parity check) when `export.onnx` is on; anomalib models excluded."""
    if not CFG.export.onnx:
        return []
    names = [m for m in MODELS if CFG.models[m].backend != "anomalib"]
    cats = fit_counts(wildcards.dataset)
    return [
        f"results/{wildcards.dataset}/models/{m}/{c}/model.onnx"
        for c in cats
        for m in names
    ]
