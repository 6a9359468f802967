"""Run the exported backbone with onnxruntime: preprocessed images -> (patch features, image
embeddings). Shared by embedding and ``defectflow infer`` (no torch, no timm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxBackbone:
    def __init__(self, path: str | Path, threads: int = 1, spin: bool = True) -> None:
        """``spin=False``: its threads sleep between calls instead of spinning, leaving the
        cores to the scoring that follows each forward and to a service's other threads."""
        # lazy: onnxruntime only where a backbone runs
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model_path = str(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 ``[B, 3, S, S]`` -> patch features rounded to float16 (the stored precision,
        returned as float32) and image embeddings (float32)."""
        patch, image = self.session.run(None, {"image": np.ascontiguousarray(batch, np.float32)})
        return patch.astype(np.float16).astype(np.float32), image.astype(np.float32)
