from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from defectflow.config import parse_config
from defectflow.errors import ConfigError
from defectflow.ingest import DEMO_DIR

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
    return expand("results/{dataset}/standardized.parquet", dataset=DATASETS)
