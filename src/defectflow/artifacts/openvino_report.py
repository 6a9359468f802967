"""``openvino_report.json``: a delivered model in OpenVINO against onnxruntime (``defectflow
openvino``), beside its ``infer_config.json``; ``--runtime openvino-int8`` reads it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import read_json_artifact, write_json_artifact


class Parity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: int
    max_abs_diff: float = Field(description="largest raw-score difference from onnxruntime")
    max_rel_diff: float = Field(description="that, over the largest onnxruntime score")
    identical: bool = Field(description="every score equal, bit for bit")


class RuntimeFigures(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images_per_s: float = Field(description="one image at a time, warm")
    auroc: float = Field(description="image AUROC: held-out good images vs synthetic defects")
    parity: Parity | None = None
    labels_agree: int | None = Field(
        default=None, description="images given the same label at the delivered threshold"
    )


class Int8Figures(RuntimeFigures):
    normals_flagged_fp32: float = Field(description="held-out good images flagged, FP32")
    normals_flagged_int8: float = Field(description="held-out good images flagged, INT8")
    offered: bool = Field(description="INT8 kept: its AUROC and the threshold hold")
    message: str
    files: dict[str, str] = Field(
        default_factory=dict, description="the INT8 model's files and their sha256 (offered)"
    )


class ImagesUsed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normal: int = Field(description="held-out good images scored")
    synthetic_defects: int = Field(description="one synthetic defect made on each of those")
    calibration: int = Field(description="good images that calibrated the INT8 quantization")


class OpenVinoReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str
    images: ImagesUsed
    onnxruntime: RuntimeFigures
    openvino_fp32: RuntimeFigures
    openvino_int8: Int8Figures


def write_openvino_report(r: OpenVinoReport, path: str | Path) -> None:
    write_json_artifact("openvino_report", r, path)


def read_openvino_report(path: str | Path) -> OpenVinoReport:
    return read_json_artifact("openvino_report", OpenVinoReport, path)
