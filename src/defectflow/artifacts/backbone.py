"""``backbone.json`` beside ``backbone.onnx``: what the exported feature extractor is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from defectflow import __version__
from defectflow.contracts import read_json_artifact, write_json_artifact


class BackboneCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    defectflow_version: str = __version__
    spec: dict[str, Any] = Field(description="BackboneSpec: timm name, weights, layers, pool")
    preprocess: dict[str, Any] = Field(description="PreprocessSpec of the graph's input")
    weights_sha256: str | None = Field(description="sha256 of the weights file it was built from")
    onnx_sha256: str
    patch_shape: list[int] = Field(description="[C, H, W] of the patch features")
    embedding_dim: int
    parity: float = Field(description="max relative difference onnxruntime vs torch at export")
    versions: dict[str, Any]


def write_backbone_card(card: BackboneCard, path: str | Path) -> None:
    write_json_artifact("backbone_card", card, path)


def read_backbone_card(path: str | Path) -> BackboneCard:
    return read_json_artifact("backbone_card", BackboneCard, path)
