import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from defectflow.models.backends import entry
from defectflow.config import parse_workflow_config
from defectflow.errors import ConfigError
from defectflow.data.sources import REGISTRY as SOURCE_TYPES
from defectflow.data.sources.mvtec import DEMO_DIR
from defectflow.sharding import n_shards

try:  # every config mistake answered here, before any job, naming the file that makes it
    CFG = parse_workflow_config(
        config,
        workflow.configfiles,
        workflow.overwrite_configfiles,
        dict(workflow.config_settings.config),
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

validate(
    CFG.model_dump(mode="json"), "../schemas/config.schema.json", set_default=False
)

DATASETS = CFG.active_datasets
# `backbone.device: cuda` makes embedding, training and scoring ask a cluster for one GPU each
GPUS = 1 if CFG.backbone.device == "cuda" else 0
# run-time settings reach their jobs as resources: changing them reruns nothing
DEVICE = CFG.backbone.device
MODELS = sorted(CFG.models)
# the default backbone (the first of a sweep): image embeddings for FiftyOne and `similar`
BACKBONE = CFG.backbone.id
BACKBONES = sorted(CFG.backbones)


# Every artifact's path, named once: rules use PATHS[name], input functions path(name, ...).
PATHS = {
    "manifest": "results/{dataset}/manifest.jsonl",
    "box_masks": "results/{dataset}/box_masks",
    "preflight": "results/{dataset}/preflight.json",
    "image_facts": "results/{dataset}/image_facts.parquet",
    "preflight_memory": "results/{dataset}/preflight_memory.json",
    "table": "results/{dataset}/standardized.parquet",
    "report": "results/{dataset}/report.html",
    "leaderboard": "results/{dataset}/leaderboard.parquet",
    "leaderboard_csv": "results/{dataset}/leaderboard.csv",
    "fiftyone": "results/{dataset}/fiftyone.json",
    "review_tasks": "results/{dataset}/review/tasks.json",
    "labeling_config": "results/{dataset}/review/labeling_config.xml",
    "run": "results/run.json",
    "backbone_onnx": "results/backbones/{backbone}/backbone.onnx",
    "backbone_card": "results/backbones/{backbone}/backbone.json",
    "patches": "results/{dataset}/embeddings/{backbone}/{category}/shard-{shard}-of-{n}.safetensors",
    "image_embeddings": "results/{dataset}/embeddings/{backbone}/{category}/shard-{shard}-of-{n}.parquet",
    "checkpoint": "results/{dataset}/models/{model}/{category}/checkpoint.safetensors",
    "model_card": "results/{dataset}/models/{model}/{category}/model_card.json",
    "crossfit": "results/{dataset}/models/{model}/{category}/crossfit.parquet",
    "synthetic_scores": "results/{dataset}/models/{model}/{category}/synthetic_scores.parquet",
    "synthetic_patches": "results/{dataset}/embeddings/{backbone}/{category}/synthetic.safetensors",
    "synthetic_embeddings": "results/{dataset}/embeddings/{backbone}/{category}/synthetic.parquet",
    "synthetic_images": "results/{dataset}/embeddings/{backbone}/{category}/synthetic",
    "scores": "results/{dataset}/models/{model}/{category}/scores/shard-{shard}-of-{n}.scores.parquet",
    "maps": "results/{dataset}/models/{model}/{category}/scores/shard-{shard}-of-{n}.maps.safetensors",
    "infer_config": "results/{dataset}/models/{model}/{category}/infer_config.json",
    "predictions": "results/{dataset}/models/{model}/{category}/predictions.jsonl",
    "heatmaps": "results/{dataset}/models/{model}/{category}/maps",
    "metrics": "results/{dataset}/models/{model}/{category}/metrics.json",
    "model_onnx": "results/{dataset}/models/{model}/{category}/model.onnx",
    "onnx_parity": "results/{dataset}/models/{model}/{category}/onnx_parity.json",
    "learning_curve": "results/{dataset}/models/{model}/{category}/learning_curve.json",
    "learning_curve_page": "results/{dataset}/learning_curve.html",
}


def path(name, **wildcards):
    """PATHS[name] with the given wildcards filled in (the others left as wildcards)."""
    return re.sub(
        r"\{(\w+)\}", lambda m: str(wildcards.get(m.group(1), m.group(0))), PATHS[name]
    )


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(map(re.escape, MODELS)),
    category="[^/]+",
    shard=r"\d+",
    n=r"\d+",
    backbone="|".join(map(re.escape, BACKBONES)),


def dataset_config(wildcards):
    """The dataset's part of the config (a param: ingest reruns when it changes)."""
    return CFG.datasets[wildcards.dataset].model_dump(mode="json")


def source_inputs(wildcards):
    """Files and folders the dataset's sources read (the demo data folder for `demo`)."""
    paths = []
    for src in CFG.datasets[wildcards.dataset].sources:
        paths.append(DEMO_DIR if src.type == "demo" else src.path)
        if SOURCE_TYPES[src.type].labels_file:
            paths.append(src.labels)
    return sorted(set(paths))


def preflight_threads(wildcards, input):
    """Decoding processes: one per 1000 records, at most `preflight.threads` (a small manifest
    does not hold both cores while the backbone is exported)."""
    from pathlib import Path

    if not Path(input.manifest).exists():  # a dry run: the manifest is not made yet
        return CFG.preflight.threads
    with open(input.manifest, "rb") as fh:
        n = sum(1 for _ in fh)
    return max(1, min(CFG.preflight.threads, n // 1000))


def all_targets():
    targets = expand(PATHS["report"], dataset=DATASETS)
    targets += expand(PATHS["leaderboard_csv"], dataset=DATASETS)
    targets.append(PATHS["run"])
    if CFG.export.fiftyone:
        targets += expand(PATHS["fiftyone"], dataset=DATASETS)
    return targets


# The files of one model x category besides its per-shard scores and maps.
MODEL_FILES = (
    "checkpoint",
    "model_card",
    "crossfit",
    "synthetic_scores",
    "infer_config",
    "predictions",
    "metrics",
)


def chain_files(wildcards):
    """Every file of the chain, not only its last ones. Snakemake does not remake a missing
    intermediate file while the files made from it exist; a run killed while it redoes a job
    (a `--forcerun`, a changed input) leaves that job's old outputs deleted and its consumers'
    in place. As targets, they are made again, and what follows from them reruns."""
    from types import SimpleNamespace

    files = []
    for dataset in DATASETS:
        for category in category_counts(dataset):
            for model in MODELS:
                w = SimpleNamespace(dataset=dataset, category=category, model=model)
                files += [
                    path(name, dataset=dataset, model=model, category=category)
                    for name in MODEL_FILES
                ]
                files += score_files(w, "scores") + score_files(w, "maps")
                if entry(CFG.models[model].backend).consumes == "features":
                    shards = feature_files(w, model_backbone(w))
                    files += shards + [
                        f.removesuffix(".safetensors") + ".parquet" for f in shards
                    ]
                    if CFG.synthetic.enabled:
                        at = dict(dataset=dataset, category=category)
                        files += [
                            path(name, backbone=model_backbone(w), **at)
                            for name in ("synthetic_patches", "synthetic_embeddings")
                        ]
    return sorted(set(files))


def backbone_files(backbone):
    """A backbone's ONNX graph and card (exported once, shared by every dataset)."""
    return {
        "onnx": path("backbone_onnx", backbone=backbone),
        "card": path("backbone_card", backbone=backbone),
    }


BACKBONE_CARDS = [backbone_files(b)["card"] for b in BACKBONES]


def model_backbone(wildcards):
    """The id of the backbone whose features a model runs on."""
    return CFG.backbone_for(wildcards.model).id


_COUNTS = {}


def category_counts(dataset):
    """Category -> number of images, read from the standardize checkpoint (its columns
    checked: a damaged table is named with what is wrong, not a traceback)."""
    import os

    from defectflow.artifacts.standardized import category_counts as counts
    from defectflow.errors import DefectflowError

    table = checkpoints.standardize.get(dataset=dataset).output.table
    key = (
        table,
        os.stat(table).st_mtime_ns,
    )  # read once per table version, not per call
    if key not in _COUNTS:
        try:
            _COUNTS[key] = counts(table)
        except DefectflowError as exc:
            raise WorkflowError(
                f"{exc} (delete it, and Snakemake makes it again)"
            ) from None
    return _COUNTS[key]


def embedding_shard(wildcards, backbone, shard, n):
    """One embedding shard of a category made by one backbone (``shard``, ``n``: as in the
    file name, zero-padded)."""
    return path(
        "patches",
        dataset=wildcards.dataset,
        backbone=backbone,
        category=wildcards.category,
        shard=shard,
        n=n,
    )


def feature_files(wildcards, backbone):
    """Every embedding shard of a category (all splits) made by one backbone."""
    n = category_shards(wildcards)
    return [
        embedding_shard(wildcards, backbone, f"{i:03d}", f"{n:03d}") for i in range(n)
    ]


def category_shards(wildcards) -> int:
    """Shards of a category: embedding and scoring both split its images this way."""
    return n_shards(
        category_counts(wildcards.dataset)[wildcards.category], CFG.backbone.shard_size
    )


def score_files(wildcards, kind):
    """A model's per-shard test scores (`scores`) or maps (`maps`)."""
    n = category_shards(wildcards)
    return [
        path(
            kind,
            dataset=wildcards.dataset,
            model=wildcards.model,
            category=wildcards.category,
            shard=f"{i:03d}",
            n=f"{n:03d}",
        )
        for i in range(n)
    ]


def category_table(wildcards):
    """The standardized table as one category's jobs read it: `ancient`, so that only their
    `rows=category_digest` param (which each of them carries) reruns them."""
    return ancient(path("table", dataset=wildcards.dataset))


def score_inputs(wildcards):
    """One shard's stored features (feature backends), or the table only (image backends)."""
    files = {"table": category_table(wildcards)}
    if entry(CFG.models[wildcards.model].backend).consumes == "features":
        files["features"] = embedding_shard(
            wildcards, model_backbone(wildcards), wildcards.shard, wildcards.n
        )
    return files


def model_inputs(wildcards):
    """What the model's backend is fitted from: its members' checkpoints and out-of-sample
    scores (a combined model), stored features, or (image backends) the table only."""
    files = {"table": category_table(wildcards)}
    params = CFG.models[wildcards.model]
    at = dict(dataset=wildcards.dataset, category=wildcards.category)
    if entry(params.backend).members:
        files["member_checkpoints"] = [
            path("checkpoint", model=m, **at) for m in params.members
        ]
        files["member_crossfits"] = [
            path("crossfit", model=m, **at) for m in params.members
        ]
        if CFG.synthetic.enabled:
            files["member_synthetic"] = [
                path("synthetic_scores", model=m, **at) for m in params.members
            ]
    elif entry(params.backend).consumes == "features":
        files["features"] = feature_files(wildcards, model_backbone(wildcards))
        if CFG.synthetic.enabled:
            files["synthetic"] = path(
                "synthetic_patches", backbone=model_backbone(wildcards), **at
            )
    return files


def backbone_inputs(wildcards):
    """The ONNX backbone, for models that run on features (it is part of their delivery)."""
    if entry(CFG.models[wildcards.model].backend).consumes == "features":
        return backbone_files(model_backbone(wildcards))
    return {}


def model_seed(wildcards):
    """A model's own seed (a sweep sets one per variant), else the top-level seed."""
    seed = CFG.models[wildcards.model].seed
    return CFG.seed if seed is None else seed


def model_params(wildcards):
    return CFG.models[wildcards.model].model_dump(mode="json")


def train_mem_mb(wildcards, input):
    """A train job's memory, from the size of the features it loads and its backend's fitting
    memory; 8000 MB while the features are not there yet (Snakemake asks again when the job is
    ready) and for image backends."""
    from defectflow.models.memory import train_mem_mb as mem_mb

    return mem_mb(
        model_params(wildcards), list(input.get("features", [])), fallback=8000
    )


def model_image_size(wildcards):
    return (
        getattr(CFG.models[wildcards.model], "image_size", None)
        or CFG.backbone_for(wildcards.model).out_size
    )


def model_out_size(wildcards):
    """Side of a model's maps: its backbone's input side."""
    return CFG.backbone_for(wildcards.model).out_size


def dataset_results(wildcards, name):
    """One file (`PATHS[name]`) per model x category of a dataset (after the standardize
    checkpoint)."""
    return [
        path(name, dataset=wildcards.dataset, model=m, category=c)
        for c in category_counts(wildcards.dataset)
        for m in MODELS
    ]


def learning_curve_files(wildcards, *, wanted=True):
    """The learning curves of a dataset's models that refit on stored features (an image
    backend's curve would retrain its network at every size); none unless ``wanted``."""
    if not wanted:
        return []
    names = [
        m
        for m in MODELS
        if entry(CFG.models[m].backend).consumes == "features"
        and not entry(CFG.models[m].backend).members
    ]
    return [
        path("learning_curve", dataset=wildcards.dataset, model=m, category=c)
        for c in category_counts(wildcards.dataset)
        for m in names
    ]


def onnx_targets(wildcards):
    """Whole-model ONNX exports (with their parity check) when `export.onnx` is on, for the
    backends whose registry entry says they can."""
    if not CFG.export.onnx:
        return []
    names = [m for m in MODELS if entry(CFG.models[m].backend).onnx]
    return [
        path("model_onnx", dataset=wildcards.dataset, model=m, category=c)
        for c in category_counts(wildcards.dataset)
        for m in names
    ]


def embedding_tables(wildcards):
    """The image-embedding tables (default backbone) of every shard of every category of a
    dataset."""
    from types import SimpleNamespace

    return [
        f.removesuffix(".safetensors") + ".parquet"
        for c in category_counts(wildcards.dataset)
        for f in feature_files(
            SimpleNamespace(dataset=wildcards.dataset, category=c), BACKBONE
        )
    ]


def all_score_maps(wildcards):
    """Every model's per-shard maps of every category of a dataset."""
    from types import SimpleNamespace

    return [
        f
        for c in category_counts(wildcards.dataset)
        for m in MODELS
        for f in score_files(
            SimpleNamespace(dataset=wildcards.dataset, category=c, model=m),
            "maps",
        )
    ]


_DIGESTS = {}


def category_digest(wildcards):
    """A digest of one category's rows of the standardized table. Rules that read one category
    take the table as `ancient` input with this as a param: a rewritten table reruns only the
    categories whose rows changed (a reviewed label in `bracket` leaves `tile` alone).
    """
    import hashlib
    import os

    import pyarrow.parquet as pq

    table = checkpoints.standardize.get(dataset=wildcards.dataset).output.table
    key = (table, os.stat(table).st_mtime_ns)
    if key not in _DIGESTS:
        by_cat = {}
        for row in pq.read_table(table).to_pylist():
            by_cat.setdefault(row["category"], []).append(
                repr(sorted((k, v) for k, v in row.items() if k != "source_line"))
            )
        _DIGESTS[key] = {
            c: hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:16]
            for c, rows in by_cat.items()
        }
    return _DIGESTS[key][wildcards.category]
