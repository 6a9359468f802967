"""The backbone in torch on a CUDA device: same network, weights and outputs as the exported
ONNX graph (which runs on the CPU through onnxruntime). Used for embedding, scoring and
``defectflow infer`` when the device is ``cuda``."""

from __future__ import annotations

from typing import Any

import numpy as np

from defectflow.errors import ModelError
from defectflow.features.onnx_runtime import OnnxBackbone


class TorchBackbone:
    def __init__(
        self, spec: dict[str, Any], weights_sha256: str | None, device: str = "cuda"
    ) -> None:
        # lazy: torch (seconds to import) only where a network runs or is exported
        import torch

        from defectflow.features.backbone import BackboneSpec, build_extractor

        model, sha = build_extractor(BackboneSpec.model_validate(spec))
        if weights_sha256 and sha != weights_sha256:
            raise ModelError(
                f"the backbone weights found here (sha256 {sha[:12]}) are not the ones "
                f"the model was made with ({weights_sha256[:12]})"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.torch = torch

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :class:`~defectflow.features.onnx_runtime.OnnxBackbone`: patch features rounded to float16
        (returned as float32) and image embeddings."""
        with self.torch.no_grad():
            x = self.torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            patch, image = self.model(x)
        return (patch.half().float().cpu().numpy(), image.float().cpu().numpy())


def make_backbone(
    onnx_path: str, spec: dict[str, Any], weights_sha256: str | None, device: str, threads: int = 1
) -> Any:
    """The backbone for ``device`` (resolved: cpu or cuda)."""
    if device == "cuda":
        return TorchBackbone(spec, weights_sha256, device)

    # no spinning: the scoring after each forward, and a service's threads, get the cores
    return OnnxBackbone(onnx_path, threads=threads, spin=False)
