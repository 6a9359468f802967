"""Sweeps: lists in a model entry or in `backbone` become named variants."""

from __future__ import annotations

import itertools
import typing
from typing import Any

from defectflow.config.schema import BackboneConfig, _default_models
from defectflow.errors import ConfigError
from defectflow.io import short_hash
from defectflow.models.backends import REGISTRY

_BACKBONE_SWEEPABLE = ("name", "weights", "layers", "pool", "image_size", "center_crop")


def _sweep_value(v: Any) -> str:
    return (f"{v:g}" if isinstance(v, float) else str(v)).replace("/", "_")


_BACKBONE_SWEEPABLE = ("name", "weights", "layers", "pool", "image_size", "center_crop")


def _backbone_label(key: str, value: Any) -> str:
    if key == "name":
        return str(value)
    if key == "layers":
        return "layers" + "".join(map(str, value))
    if key == "weights":
        return "w" + (value if value in ("builtin", "pretrained") else short_hash(value, 6))
    return {"image_size": "size", "center_crop": "crop"}.get(key, key) + _sweep_value(value)


def expand_backbone_sweep(backbone: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A backbone entry with lists (``name: [a, b]``, ``layers: [[2, 3], [2, 4]]``...) -> one
    ``(label, settings)`` per combination, in a stable order (a single entry: ``[("", entry)]``).
    The label names only the swept values (``-layers24``, ``-tf_efficientnet_lite1-size256``)."""

    def swept(k: str, v: Any) -> bool:
        if not isinstance(v, list) or not v:
            return False
        return k != "layers" or all(isinstance(x, list) for x in v)

    keys = [k for k in _BACKBONE_SWEEPABLE if swept(k, backbone.get(k))]
    if not keys:
        return [("", backbone)]
    out = []
    for combo in itertools.product(*(backbone[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        out.append(
            (
                "".join(f"-{_backbone_label(k, v)}" for k, v in values.items()),
                {**backbone, **values},
            )
        )
    return out


def cross_backbones(models: dict[str, Any], variants: dict[str, str]) -> dict[str, Any]:
    """Each model entry that runs on features, once per backbone variant (label -> backbone id):
    ``patchcore`` -> ``patchcore-layers23``, ``patchcore-layers24``. Entries of image backends
    (their own network) pass unchanged."""
    out: dict[str, Any] = {}
    for name, entry in (models or {}).items():
        backend = entry.get("backend") if isinstance(entry, dict) else None
        if backend not in REGISTRY or REGISTRY[backend].consumes != "features":
            out[name] = entry
            continue
        for label, bid in variants.items():
            out[f"{name}{label}"] = {
                **entry,
                "backbone_variant": bid,
                "variant_of": entry.get("variant_of") or name,
            }
    return out


def expand_sweeps(models: dict[str, Any]) -> dict[str, Any]:
    """Model entries with list values for scalar params and/or ``seeds: [...]`` -> one named
    variant per combination (``patchcore-coreset_ratio0.01-s1``), in a stable order. Other
    entries pass unchanged. Each variant records the entry it comes from (``variant_of``)."""

    out: dict[str, Any] = {}
    for name, entry in (models or {}).items():
        if not isinstance(entry, dict) or entry.get("backend") not in REGISTRY:
            out[name] = entry  # validation reports it
            continue
        fields = REGISTRY[entry["backend"]].params.model_fields
        swept = {
            k: v
            for k, v in entry.items()
            if isinstance(v, list)
            and k in fields
            and typing.get_origin(fields[k].annotation) is not list
        }
        empty = sorted(k for k, v in swept.items() if not v)
        if empty:  # a product over an empty list is nothing: the model would vanish unsaid
            raise ConfigError(
                f"models.{name}.{empty[0]}: an empty list sweeps no value and would drop the "
                "model; give at least one value"
            )
        seeds = entry.get("seeds")
        if not swept and seeds is None:
            out[name] = entry
            continue
        if seeds is not None and (not isinstance(seeds, list) or not seeds):
            raise ConfigError(f"models.{name}.seeds: give a list of integers, e.g. [0, 1, 2]")
        base = {k: v for k, v in entry.items() if k not in swept and k != "seeds"}
        keys = sorted(swept)
        for combo in itertools.product(*(swept[k] for k in keys), *([seeds] if seeds else [])):
            values = dict(zip(keys, combo[: len(keys)], strict=True))
            suffix = "".join(f"-{k}{_sweep_value(v)}" for k, v in values.items())
            variant = {**base, **values, "variant_of": entry.get("variant_of") or name}
            if seeds:
                variant["seed"] = combo[-1]
                suffix += f"-s{combo[-1]}"
            out[f"{name}{suffix}"] = variant
    return out


def expand(data: dict[str, Any]) -> dict[str, Any]:
    """Backbone and model sweeps expanded into variants."""
    if isinstance(data.get("backbone"), dict):
        sweep = expand_backbone_sweep(data["backbone"])
        data["backbone"] = sweep[0][1]  # a one-value list is that value
        if len(sweep) > 1:
            ids = {}
            for label, settings in sweep:
                bb = BackboneConfig.model_validate(settings)
                ids[label] = bb.id
                data.setdefault("backbone_variants", {})[bb.id] = settings
            models = data.get("models")
            if models is None:
                models = {k: v.model_dump(mode="json") for k, v in _default_models().items()}
            if isinstance(models, dict):
                data["models"] = cross_backbones(models, ids)
    if isinstance(data.get("models"), dict):
        data["models"] = expand_sweeps(data["models"])
    return data
