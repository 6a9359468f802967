"""The workflow configuration: its model (:mod:`.schema`), sweeps (:mod:`.sweeps`), reading and
validating it (:mod:`.loading`) with errors in the user's words (:mod:`.messages`), and the
generated key reference (:mod:`.reference`)."""

from defectflow.config.loading import load_config, parse_config, parse_workflow_config
from defectflow.config.reference import config_reference, update_reference
from defectflow.config.schema import (
    NAME_RE,
    BackboneConfig,
    Config,
    DatasetConfig,
    DemoConfig,
    ExportConfig,
    MapsConfig,
    PreflightConfig,
    ReviewConfig,
    SplitConfig,
    ThresholdConfig,
)

__all__ = [
    "NAME_RE",
    "BackboneConfig",
    "Config",
    "DatasetConfig",
    "DemoConfig",
    "ExportConfig",
    "MapsConfig",
    "PreflightConfig",
    "ReviewConfig",
    "SplitConfig",
    "ThresholdConfig",
    "config_reference",
    "load_config",
    "parse_config",
    "parse_workflow_config",
    "update_reference",
]
