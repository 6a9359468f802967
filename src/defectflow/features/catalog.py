"""What timm offers, known without importing it: the architectures it registers, the ones whose
ImageNet weights ship in a pip package, and how many feature levels a network has."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

#: timm names whose ImageNet weights ship in a pip package (`weights: builtin`)
BUILTIN_ARCHS = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


@functools.cache
def feature_stages(arch: str) -> int | None:
    """How many feature levels (timm ``out_indices``) a timm network has; None when timm cannot
    build it. The packaged backbones are known; others are built on PyTorch's ``meta`` device
    (no memory, no weights; importing timm takes seconds, so only for layers above 3)."""
    if arch in BUILTIN_ARCHS:
        return 5
    try:
        # lazy: timm (it imports torch) only where a backbone is built
        import timm
        import torch

        with torch.device("meta"):
            return len(timm.create_model(arch, features_only=True, pretrained=False).feature_info)
    except Exception:  # noqa: BLE001 - the export job reports what timm says
        return None


@functools.cache
def timm_model_names() -> frozenset[str]:
    """Every architecture timm registers, read from its source without importing it (importing
    timm imports torch: seconds, in every job that parses the config)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    pattern = re.compile(r"@register_model\s*\ndef\s+(\w+)\s*\(")
    return frozenset(
        name for f in models.rglob("*.py") for name in pattern.findall(f.read_text("utf-8"))
    )
