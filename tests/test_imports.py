"""Jobs load only what they need: no torch/timm/anomalib/lightning where no network runs, and
the delivery path imports no training code (a job's start-up is seconds of imports otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "anomalib", "lightning")


def _loaded(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    "module",
    [
        "defectflow.data.ingest", "defectflow.data.preflight", "defectflow.models.memory", "defectflow.data.standardize",
        "defectflow.features.embeddings", "defectflow.models.train", "defectflow.deploy.scoring", "defectflow.models.calibrate",
        "defectflow.deploy.predict", "defectflow.evaluation.metrics", "defectflow.evaluation.report", "defectflow.deploy.detector",
        "defectflow.models.backends.knn", "defectflow.models.backends.patchcore", "defectflow.models.backends.padim",
    ],
)  # fmt: skip
def test_stage_modules_do_not_import_torch(module):
    loaded = _loaded(module)
    assert not [m for m in HEAVY if m in loaded], module


def test_delivery_path_imports_no_training_code():
    # the detector and the backends it loads a checkpoint into (PatchCore's coreset is training)
    loaded = _loaded(
        "defectflow.deploy.detector, defectflow.models.backends.patchcore, defectflow.models.backends.knn"
    )
    training = {"defectflow.models.train", "defectflow.features.embeddings", "defectflow.features.backbone", "defectflow.features.export",
                "defectflow.models.backends.coreset", "defectflow.data.standardize", "defectflow.data.preflight"}  # fmt: skip
    assert not training & loaded, training & loaded


def test_parsing_the_config_imports_no_backend_implementation():
    loaded = _loaded("defectflow.config")
    assert not {
        m
        for m in loaded
        if m.startswith(
            ("defectflow.models.backends.knn", "defectflow.models.backends.anomalib", "torch")
        )
    }
