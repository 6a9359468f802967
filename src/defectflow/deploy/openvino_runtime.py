"""The backbone in OpenVINO (CPU): the same ONNX graph, or an INT8 model NNCF quantized from it.

FP32 is asked for explicitly (``INFERENCE_PRECISION_HINT``): on CPUs with bf16 units OpenVINO
would otherwise run in bf16 and the scores would drift from onnxruntime's. :func:`parity` says how
far a runtime's scores are from onnxruntime's on given images; :func:`quantize_int8` makes an
INT8 backbone, which :func:`int8_verdict` accepts only where its image AUROC stays within
:data:`INT8_AUROC_TOLERANCE` of FP32's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.artifacts.openvino_report import (
    OpenVinoReport,
    read_openvino_report,
    write_openvino_report,
)
from defectflow.errors import ModelError
from defectflow.features.preprocess import to_array
from defectflow.io import sha256_file

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
    # lazy: nncf (it loads torch) and openvino only where a model is quantized
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


def int8_verdict(
    auroc_fp32: float,
    auroc_int8: float,
    on: str,
    normals_flagged_int8: float | None = None,
    stated_high: float | None = None,
) -> tuple[bool, str]:
    """INT8 is offered only where its image AUROC is within the tolerance of FP32's and, at the
    delivered threshold (calibrated on FP32 scores), it flags no more good images than the
    stated false-alarm rate allows (its 95% quantile)."""
    drop = auroc_fp32 - auroc_int8
    figures = f"image AUROC on {on}: FP32 {auroc_fp32:.4f}, INT8 {auroc_int8:.4f}"
    if drop > INT8_AUROC_TOLERANCE:
        return False, (
            f"INT8 refused: {figures}; it loses {drop:.4f}, more than {INT8_AUROC_TOLERANCE}"
        )
    flags = normals_flagged_int8 is not None and stated_high is not None
    if flags and normals_flagged_int8 > stated_high:  # type: ignore[operator]
        return False, (
            f"INT8 refused: {figures} (ranking kept), but its raw scores shift: at the delivered "
            f"threshold it flags {normals_flagged_int8:.1%} of the held-out good images, more "
            f"than the stated false-alarm rate allows (up to {stated_high:.1%}); FP32 keeps the "
            "threshold"
        )
    return True, f"INT8 offered: {figures} (drop {drop:+.4f} within {INT8_AUROC_TOLERANCE})" + (
        f"; at the delivered threshold it flags {normals_flagged_int8:.1%} of the held-out good "
        f"images (stated up to {stated_high:.1%})"
        if flags
        else ""
    )


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC (ties count half)."""
    y = np.asarray(labels, bool)
    neg, pos = np.sort(np.asarray(scores)[~y]), np.asarray(scores)[y]
    lo, hi = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
    return float((lo + (hi - lo) / 2).sum() / (len(neg) * len(pos)))


REPORT = "openvino_report.json"
INT8_MODEL = "backbone-int8.xml"


def check_openvino(
    infer_config: str | Path,
    normals: list[Path],
    *,
    threads: int = 2,
    max_calibration: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """The OpenVINO parity report of a delivered model, written beside its infer_config.json.

    The good images are split: the first half (at most ``max_calibration``) calibrates NNCF's INT8
    quantization; the second half, and one synthetic defect made on each of its images, are scored
    by onnxruntime, OpenVINO FP32 and OpenVINO INT8. FP32 is compared with onnxruntime score by
    score; INT8 is kept (``backbone-int8.xml``) only where its image AUROC on those images stays
    within :data:`INT8_AUROC_TOLERANCE` of FP32's, else removed, the report giving the figures.
    """
    # lazy: the detector imports this module (openvino on demand); synthetic defects only here
    from defectflow.deploy.detector import Detector, decode
    from defectflow.features.synthetic import FAMILIES, _rng, make_defect

    ic = Path(infer_config)
    ort = Detector.load(ic, threads=threads)
    if ort.backbone is None:
        raise ModelError(
            f"{ort.cfg.backend} runs its own torch forward: no ONNX backbone to convert"
        )
    if len(normals) < 8:
        raise ModelError(f"{len(normals)} good images: give at least 8 (16 or more is better)")
    half = len(normals) // 2
    calib_files, held_files = normals[:half][:max_calibration], normals[half:][:200]
    held = [decode(p)[0] for p in held_files]
    defects = []
    for i, img in enumerate(held):
        rng = _rng(seed, "openvino", i)
        donor = held[(i + 1) % len(held)]
        defects.append(
            make_defect(img, donor, FAMILIES[i % len(FAMILIES)], 1.0, rng)[0].convert("RGB")
        )
    images = held + defects
    labels = np.array([False] * len(held) + [True] * len(defects))
    ids = [f"i{i}" for i in range(len(images))]

    def scores(det: Detector) -> tuple[np.ndarray, float]:
        det.score_loaded(ids[:1], images[:1])  # warm
        t = time.perf_counter()
        out = np.array(
            [det.score_loaded([i], [im])[0][0] for i, im in zip(ids, images, strict=True)]
        )
        return out, len(images) / (time.perf_counter() - t)

    threshold = ort.cfg.threshold.value
    s_ort, ips_ort = scores(ort)
    report: dict[str, Any] = {
        "model_id": ort.cfg.model_id,
        "images": {
            "normal": len(held),
            "synthetic_defects": len(defects),
            "calibration": len(calib_files),
        },
        "onnxruntime": {
            "images_per_s": round(ips_ort, 2),
            "auroc": round(_auroc(labels, s_ort), 4),
        },
    }
    ov = Detector.load(ic, threads=threads, runtime="openvino")
    s_ov, ips_ov = scores(ov)
    report["openvino_fp32"] = {
        "images_per_s": round(ips_ov, 2),
        "auroc": round(_auroc(labels, s_ov), 4),
        "parity": parity(s_ort.tolist(), s_ov.tolist()),
        "labels_agree": int(((s_ort >= threshold) == (s_ov >= threshold)).sum()),
    }
    int8_path = ic.parent / INT8_MODEL
    calib = [to_array(decode(p)[0], ort.pp) for p in calib_files]  # type: ignore[arg-type]
    onnx = Path(ort.backbone.model_path)
    quantize_int8(onnx, calib, int8_path)
    q = Detector.load(ic, threads=threads, runtime="openvino")
    q.backbone = OpenVinoBackbone(int8_path, threads=threads)
    s_q, ips_q = scores(q)
    auroc_fp32, auroc_int8 = _auroc(labels, s_ov), _auroc(labels, s_q)
    normal_flags = lambda s: float((s[: len(held)] >= threshold).mean())  # noqa: E731
    rate = ort.cfg.threshold.false_alarms
    offered, message = int8_verdict(
        auroc_fp32,
        auroc_int8,
        f"{len(held)} held-out good images and {len(defects)} synthetic defects",
        normal_flags(s_q),
        rate.high if rate is not None else None,
    )
    report["openvino_int8"] = {
        "images_per_s": round(ips_q, 2),
        "auroc": round(auroc_int8, 4),
        "parity": parity(s_ort.tolist(), s_q.tolist()),
        "normals_flagged_fp32": round(normal_flags(s_ov), 4),
        "normals_flagged_int8": round(normal_flags(s_q), 4),
        "offered": offered,
        "message": message,
    }
    bin_path = int8_path.with_suffix(".bin")
    if offered:
        report["openvino_int8"]["files"] = {
            INT8_MODEL: sha256_file(int8_path),
            bin_path.name: sha256_file(bin_path),
        }
    else:
        int8_path.unlink(missing_ok=True)
        bin_path.unlink(missing_ok=True)
    write_openvino_report(OpenVinoReport.model_validate(report), ic.parent / REPORT)
    return report


def int8_backbone(base: Path, model_id: str, threads: int) -> OpenVinoBackbone:
    """The INT8 backbone beside an infer_config.json, where its report offers it for this model
    and its files are the ones the report checked."""
    rep = base / REPORT
    if not rep.is_file():
        raise ModelError(
            f"no {REPORT} beside the model: run `defectflow openvino --infer-config ... "
            "--normals DIR` first"
        )
    r = read_openvino_report(rep)
    if r.model_id != model_id:
        raise ModelError(f"{rep} is of model {r.model_id}, not {model_id}: run the check again")
    if not r.openvino_int8.offered:
        raise ModelError(f"INT8 is not offered for {model_id}: {r.openvino_int8.message}")
    for name, sha in r.openvino_int8.files.items():
        if not (base / name).is_file() or sha256_file(base / name) != sha:
            raise ModelError(f"{base / name} is missing or changed since the check: run it again")
    return OpenVinoBackbone(base / INT8_MODEL, threads=threads)
