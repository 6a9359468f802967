"""Where the backbone, the PatchCore coreset and nearest-neighbour search run: ``cpu`` or
``cuda`` (``backbone.device``; ``auto``: CUDA when torch sees a GPU). One setting per process,
set by each job from the config (a performance setting: no rerun when it changes)."""

from __future__ import annotations

from pathlib import Path

from defectflow.errors import ModelError

_current = "cpu"


def _nvidia_present() -> bool:
    """A cheap look for an NVIDIA driver, so CPU machines never import torch to decide."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()


def resolve(name: str) -> str:
    if name == "cpu":
        return "cpu"
    if name not in ("auto", "cuda"):
        raise ModelError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "auto" and not _nvidia_present():
        return "cpu"
    # lazy: torch (seconds to import) only where a network runs or is exported
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if name == "cuda":
        raise ModelError(
            "backbone.device is cuda, but torch sees no CUDA device "
            "(torch.cuda.is_available() is False); use auto or cpu"
        )
    return "cpu"


def use(name: str) -> str:
    """Resolve ``name`` and make it this process's device; returns it."""
    global _current
    _current = resolve(name)
    return _current


def current() -> str:
    return _current
