"""The backbone in OpenVINO (CPU): the same ONNX graph, or an INT8 model NNCF quantized from it.

FP32 is asked for explicitly (``INFERENCE_PRECISION_HINT``): on CPUs with bf16 units OpenVINO
would otherwise run in bf16 and the scores would drift from onnxruntime's. :func:`parity` says how
far a runtime's scores are from onnxruntime's on given images; :func:`quantize_int8` makes an
INT8 backbone, which :func:`int8_verdict` accepts only where its image AUROC stays within
:data:`INT8_AUROC_TOLERANCE` of FP32's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INT8_AUROC_TOLERANCE = 0.005


class OpenVinoBackbone:
    """As :class:`~defectflow.features.onnx_runtime.OnnxBackbone`, run by OpenVINO."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        # lazy: openvino (a second) only where it is asked for
        import openvino as ov

        core = ov.Core()
        self.model_path = str(path)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": max(1, threads)}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._request = self.compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 ``[B, 3, S, S]`` -> patch features rounded to float16 (returned as float32)
        and image embeddings."""
        out = self._request.infer({0: np.ascontiguousarray(batch, np.float32)})
        patch, image = out[self.compiled.output(0)], out[self.compiled.output(1)]
        return (
            np.asarray(patch).astype(np.float16).astype(np.float32),
            np.asarray(image, np.float32).copy(),
        )


def quantize_int8(onnx_path: str | Path, calibration: list[np.ndarray], out: str | Path) -> Path:
    """NNCF post-training quantization of the backbone, calibrated on preprocessed normal
    images (``[3, S, S]`` each); writes ``out`` (``.xml`` + ``.bin``)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    data = nncf.Dataset(calibration, lambda x: x[None].astype(np.float32))
    q = nncf.quantize(model, data, subset_size=len(calibration))
    ov.save_model(q, str(out))
    return Path(out)


def parity(reference: list[float], other: list[float]) -> dict[str, Any]:
    """How far ``other`` scores lie from ``reference`` (onnxruntime) on the same images."""
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    scale = max(float(np.abs(a).max()), 1e-12)
    return {
        "images": len(a),
        "max_abs_diff": float(np.abs(a - b).max()) if len(a) else 0.0,
        "max_rel_diff": float(np.abs(a - b).max() / scale) if len(a) else 0.0,
        "identical": bool(np.array_equal(a, b)),
    }


def int8_verdict(auroc_fp32: float, auroc_int8: float, on: str) -> tuple[bool, str]:
    """INT8 is offered only where its image AUROC is within the tolerance of FP32's."""
    drop = auroc_fp32 - auroc_int8
    figures = f"image AUROC on {on}: FP32 {auroc_fp32:.4f}, INT8 {auroc_int8:.4f}"
    if drop <= INT8_AUROC_TOLERANCE:
        return True, f"INT8 offered: {figures} (drop {drop:+.4f} within {INT8_AUROC_TOLERANCE})"
    return False, (
        f"INT8 refused: {figures}; it loses {drop:.4f}, more than {INT8_AUROC_TOLERANCE}"
    )
