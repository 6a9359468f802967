"""Workflow configuration: the pydantic model is the source of truth for
``schemas/config.schema.json`` and for every default documented in ``config/README.md``."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from defectflow.data.sources import REGISTRY as SOURCES
from defectflow.data.sources import Source
from defectflow.errors import ConfigError
from defectflow.io import load_yaml
from defectflow.models.backends import REGISTRY
from defectflow.models.backends.params import KnnParams, PadimParams, PatchcoreParams
from defectflow.records import Severity

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SplitConfig(_Strict):
    """How images without a split are assigned (deterministic, group-aware)."""

    val_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="share of normal training images moved to `val` when a category has none (val is held out: "
        "never fitted, scored by the delivered model for calibration)",
    )
    val_from_test: float = Field(
        default=0.3,
        ge=0.0,
        lt=1.0,
        description="share of a category's test images (normal and anomalous alike, per defect type, whole groups) "
        "moved to `val` when its val split holds no anomaly, so the threshold is chosen on held-out labelled images "
        "(anomalib's default validation split is carved from test the same way); test metrics rest on the rest. "
        "0: the test split stays whole and the threshold rests on cross-fitted training normals",
    )
    test_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="share of normal images with no split that go to `test` (anomalies with no split always go to `test`)",
    )
    seed: int = Field(default=0, description="seed of the split hash")


class DatasetConfig(_Strict):
    enabled: bool = Field(
        default=True,
        description="false skips the dataset (e.g. `demo` when --configfile adds yours)",
    )
    sources: list[Source] = Field(
        min_length=1, description="one or more sources merged into one dataset"
    )
    split: SplitConfig | None = Field(
        default=None, description="overrides the top-level `split` for this dataset"
    )


class DemoConfig(_Strict):
    seed: int = Field(default=0, description="generator seed (same seed, same bytes)")
    image_size: int = Field(
        default=224,
        ge=64,
        le=1024,
        description="side of the square images, pixels (the model input)",
    )
    n_train: int = Field(default=60, ge=4, description="normal training images per category")
    n_test_normal: int = Field(default=16, ge=1, description="normal test images per category")
    n_test_per_defect: int = Field(
        default=6, ge=1, description="test images per defect type and category"
    )
    categories: list[Literal["tile", "bracket"]] = Field(
        default=["tile", "bracket"],
        min_length=1,
        description="which demo categories to generate (a smaller demo for quick checks)",
    )


class PreflightConfig(_Strict):
    verify: Literal["header", "full"] = Field(
        default="full",
        description="`header`: read headers only; `full`: also decode every image and mask",
    )
    threads: int = Field(
        default=4,
        ge=1,
        description="processes for file inspection (Snakemake caps it at --cores; performance only: no rerun)",
    )
    near_duplicate_distance: int = Field(
        default=4,
        ge=-1,
        le=64,
        description="max Hamming distance of the 256-bit dHash that counts as a near-duplicate across splits (-1 disables)",
    )
    min_train_images: int = Field(
        default=10, ge=0, description="fewer normal training images than this is a warning"
    )
    max_memory_mb: int = Field(
        default=8000, ge=1, description="projected model memory above this is a warning"
    )
    ignore: list[str] = Field(default_factory=list, description="issue codes to drop")
    severity: dict[str, Severity] = Field(
        default_factory=dict, description="issue code -> severity override"
    )

    @field_validator("ignore")
    @classmethod
    def _codes_upper(cls, v: list[str]) -> list[str]:
        return [_known_code(c.upper()) for c in v]

    @field_validator("severity")
    @classmethod
    def _severity_codes(cls, v: dict[str, Severity]) -> dict[str, Severity]:
        return {_known_code(k.upper()): s for k, s in v.items()}

    def result_params(self) -> dict[str, Any]:
        """The keys that change preflight.json: not threads (speed), nor max_memory_mb (read by
        the memory projection, a rule of its own)."""
        return self.model_dump(mode="json", exclude={"threads", "max_memory_mb"})


def _known_code(code: str) -> str:
    from defectflow.codes import CODES

    if code not in CODES:
        import difflib

        close = difflib.get_close_matches(code, list(CODES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown preflight code {code!r}{hint} (codes: docs/preflight_codes.md)")
    return code


class BackboneConfig(_Strict):
    """Feature extractor and preprocessing shared by every model of a dataset."""

    name: str = Field(default="tf_efficientnet_lite0", description="timm model name")
    weights: str = Field(
        default="builtin",
        description="`builtin` (ImageNet weights shipped in pip packages: tf_efficientnet_lite0, lite1, lite2), "
        "`pretrained` (timm hub download; needs a network) or a .safetensors/.pth state dict path",
    )
    layers: list[int] = Field(
        default_factory=lambda: [2, 3],
        description="feature levels (timm out_indices) of the patch features",
    )
    pool: int = Field(default=3, ge=1, description="local average pooling of patch features")
    image_size: int = Field(
        default=224, ge=32, le=1024, description="images are resized to this square side"
    )
    center_crop: int | None = Field(
        default=None, description="crop side after resizing (null: no crop)"
    )
    batch_size: int = Field(default=16, ge=1, description="images per forward pass")
    shard_size: int = Field(
        default=2000,
        ge=1,
        description="images per embedding job (large categories run as parallel shards); "
        "a change reruns embedding only where it changes a category's number of shards",
    )
    threads: int = Field(
        default=2, ge=1, description="threads per embedding job (performance only: no rerun)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="where embedding, the PatchCore coreset and nearest-neighbour search run "
        "(auto: CUDA when torch sees a GPU); performance only: no rerun. `cuda` also makes those "
        "rules ask a cluster for one GPU",
    )

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        import difflib

        from defectflow.features.catalog import timm_model_names

        names = timm_model_names()
        arch = v.split(".", 1)[0]  # timm's `arch.pretrained_tag` form
        if names and arch not in names:
            close = difflib.get_close_matches(arch, sorted(names), n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"timm has no model {arch!r}.{hint} Any name from `timm.list_models()` works."
            )
        return v

    @field_validator("weights")
    @classmethod
    def _builtin_exists(cls, v: str, info: ValidationInfo) -> str:
        from defectflow.features.catalog import BUILTIN_ARCHS

        name = info.data.get("name")
        if v == "builtin" and name is not None and name.split(".", 1)[0] not in BUILTIN_ARCHS:
            raise ValueError(
                f"packaged (`builtin`) weights exist for {', '.join(BUILTIN_ARCHS)}, not {name!r}: "
                "give a .safetensors/.pth state dict path, or `pretrained` (a timm hub download: "
                "needs a network), or pick one of those backbones"
            )
        return v

    @field_validator("layers")
    @classmethod
    def _layers_exist(cls, v: list[int], info: ValidationInfo) -> list[int]:
        from defectflow.features.catalog import feature_stages

        if not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("give distinct feature levels 0, 1, 2, ... (timm out_indices)")
        name = info.data.get("name")
        stages = feature_stages(name.split(".", 1)[0]) if name and max(v) > 3 else None
        if stages is not None and max(v) >= stages:  # 0-3 exist in every timm CNN
            raise ValueError(f"{name} has {stages} feature levels (0-{stages - 1})")
        return v

    @property
    def out_size(self) -> int:
        return self.center_crop or self.image_size

    @property
    def id(self) -> str:
        """A readable folder name for this backbone and its preprocessing."""
        from defectflow.io import short_hash

        layers = "".join(map(str, self.layers))
        crop = f"_c{self.center_crop}" if self.center_crop else ""
        w = "" if self.weights in ("builtin", "pretrained") else f"_w{short_hash(self.weights, 6)}"
        return f"{self.name}_L{layers}_p{self.pool}_s{self.image_size}{crop}{w}"

    def result_params(self) -> dict[str, Any]:
        """The keys that change features (threads, batch and shard sizes do not)."""
        return self.model_dump(
            mode="json", exclude={"threads", "batch_size", "shard_size", "device"}
        )


ModelConfig = Annotated[
    Union[tuple(e.params for e in REGISTRY.values())],  # noqa: UP007 - built from the registry
    Field(discriminator="backend"),
]


def _default_models() -> dict[str, Any]:
    return {
        "knn": KnnParams(backend="knn"),
        "patchcore": PatchcoreParams(backend="patchcore"),
        "padim": PadimParams(backend="padim"),
    }


class ThresholdConfig(_Strict):
    policy: Literal["auto", "normal_quantile", "f1_optimal", "fixed"] = Field(
        default="auto",
        description="`auto`: f1_optimal when val has at least `min_anomalies` anomalies (by default val is carved "
        "from test: `split.val_from_test`), else normal_quantile. f1_optimal rests on the held-out val images "
        "(with out-of-fold training normals when val has fewer than `min_anomalies` normals); normal_quantile on "
        "out-of-fold scores of every training normal (cross-fitting) and val normals",
    )
    quantile: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="normal_quantile: quantile of the out-of-fold normal scores (1 - target false-positive rate)",
    )
    value: float | None = Field(default=None, description="fixed: the raw score threshold")
    folds: int = Field(
        default=5,
        ge=2,
        le=50,
        description="cross-fit folds over the train normals (fit on k-1, score the held-out fold)",
    )
    min_anomalies: int = Field(
        default=3, ge=1, description="auto: val anomalies needed to use f1_optimal"
    )

    @model_validator(mode="after")
    def _fixed_needs_value(self) -> ThresholdConfig:
        if self.policy == "fixed" and self.value is None:
            raise ValueError("policy `fixed` needs `threshold.value` (a raw score)")
        return self


class MapsConfig(_Strict):
    sigma: float = Field(
        default=4.0,
        ge=0,
        description="Gaussian smoothing of anomaly maps, in pixels of the model input",
    )


class ReviewConfig(_Strict):
    """Label Studio review tasks (`snakemake review`)."""

    document_root: str = Field(
        default="/",
        description="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT of your Label Studio: images must lie under it",
    )
    margin: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="normalized scores within this of the threshold (0.5) are reviewed",
    )
    max_tasks: int = Field(default=200, ge=1, description="most tasks per dataset (misses first)")


class ExportConfig(_Strict):
    onnx: bool = Field(
        default=False,
        description="also export the feature extractor + model to ONNX, with a parity check",
    )
    onnx_tolerance: float = Field(
        default=1e-3, gt=0, description="max relative score difference ONNX vs torch"
    )
    fiftyone: bool = Field(
        default=False,
        description="also build a FiftyOne dataset per dataset (`snakemake fiftyone` builds it "
        "on demand); open it with `defectflow app DATASET`",
    )
    fiftyone_visualization: Literal["auto", "umap", "pca", "tsne"] = Field(
        default="auto",
        description="2-D embedding plot of the FiftyOne dataset (auto: umap from 20 images, else pca)",
    )


class Config(_Strict):
    """Top-level workflow configuration."""

    datasets: dict[str, DatasetConfig] = Field(
        min_length=1, description="dataset name -> its sources"
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="split assignment (all datasets)"
    )
    demo: DemoConfig = Field(default_factory=DemoConfig, description="the built-in demo data")
    preflight: PreflightConfig = Field(default_factory=PreflightConfig, description="the data gate")
    backbone: BackboneConfig = Field(
        default_factory=BackboneConfig,
        description="feature extractor of every model that runs on features; lists for name, "
        "weights, pool, image_size, center_crop and a list of lists for layers sweep it "
        "(each feature model then runs once per backbone variant)",
    )
    backbone_variants: dict[str, BackboneConfig] = Field(
        default_factory=dict,
        description="set by a backbone sweep (not by hand): backbone id -> its settings",
    )
    models: dict[str, ModelConfig] = Field(
        default_factory=_default_models,
        min_length=1,
        description="model name -> backend and its parameters",
    )
    threshold: ThresholdConfig = Field(
        default_factory=ThresholdConfig, description="threshold calibration"
    )
    maps: MapsConfig = Field(default_factory=MapsConfig, description="anomaly maps")
    export: ExportConfig = Field(default_factory=ExportConfig, description="delivery formats")
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="Label Studio review")
    seed: int = Field(default=0, description="seed of every random choice in fitting")

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(
                    f"dataset name {name!r} must match {NAME_RE} (it becomes a folder name)"
                )
        return v

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(
                    f"model name {name!r} must match {NAME_RE} (it becomes a folder name)"
                )
        return v

    @model_validator(mode="after")
    def _known_backbone_variants(self) -> Config:
        for name, m in self.models.items():
            if m.backbone_variant is not None and m.backbone_variant not in self.backbones:
                raise ValueError(
                    f"models.{name}.backbone_variant: {m.backbone_variant!r} is no backbone of "
                    f"this config (known: {sorted(self.backbones)}); sweep backbones with lists "
                    "in `backbone`"
                )
        return self

    @property
    def backbones(self) -> dict[str, BackboneConfig]:
        """Backbone id -> settings: the swept variants, else the one `backbone`."""
        return dict(self.backbone_variants) or {self.backbone.id: self.backbone}

    def backbone_for(self, model: str) -> BackboneConfig:
        """The backbone a model's features come from (image backends: the default backbone,
        whose input size they take when they give none)."""
        variant = self.models[model].backbone_variant
        return self.backbones[variant] if variant else self.backbone

    @property
    def active_datasets(self) -> list[str]:
        return sorted(name for name, ds in self.datasets.items() if ds.enabled)

    @model_validator(mode="after")
    def _something_enabled(self) -> Config:
        if not self.active_datasets:
            raise ValueError(
                "no dataset is enabled: set `enabled: true` on one, or add yours with --configfile"
            )
        return self

    def split_for(self, dataset: str) -> SplitConfig:
        return self.datasets[dataset].split or self.split

    def missing_files(self, base: str | Path = ".") -> list[tuple[list[Any], str]]:
        """(key path, problem) for each file an enabled dataset's sources or the backbone names
        that does not exist (relative paths are relative to ``base``, the workflow folder).
        Checked before any job runs, so a misspelt path is not answered with "nothing to be
        done" over old results, nor found in the export job."""
        problems: list[tuple[list[Any], str]] = []
        for name in self.active_datasets:
            for i, src in enumerate(self.datasets[name].sources):
                path = getattr(src, "path", None)
                if path is None:
                    continue
                key = ["datasets", name, "sources", i]
                full = Path(base) / path
                if not full.exists():
                    problems.append(
                        (
                            key + ["path"],
                            f"{path} does not exist (looked for "
                            f"{full.resolve()}); fix the path or set `enabled: false` on "
                            f"dataset {name!r}",
                        )
                    )
                elif src.type == "coco" and not (Path(base) / src.labels).is_file():
                    problems.append(
                        (
                            key + ["labels"],
                            f"{src.labels} does not exist (looked for "
                            f"{(Path(base) / src.labels).resolve()})",
                        )
                    )
                elif src.type == "manifest" and not full.is_file():
                    problems.append(
                        (
                            key + ["path"],
                            f"{path} is a folder; a manifest source names "
                            "a file (use type: mvtec or folder for a folder of images)",
                        )
                    )
        for bb in self.backbones.values():
            if (
                bb.weights not in ("builtin", "pretrained")
                and not (Path(base) / bb.weights).is_file()
            ):
                problems.append(
                    (
                        ["backbone", "weights"],
                        f"weights file {bb.weights} does not exist "
                        f"(looked for {(Path(base) / bb.weights).resolve()}); give a "
                        ".safetensors/.pth state dict, `builtin` or `pretrained`",
                    )
                )
        return list({text: (k, text) for k, text in problems}.values())

    def missing_sources(self, base: str | Path = ".") -> list[str]:
        """:meth:`missing_files` as lines ``key: problem``."""
        return [f"{format_key(k)}: {text}" for k, text in self.missing_files(base)]


def _members(annotation: Any) -> list[Any]:
    """The types a field may hold: Optional and unions opened, Annotated stripped."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a) if m is not type(None)]
    return [annotation]


def _tag_member(members: list[Any], tag: Any) -> Any:
    """The member of a discriminated union whose Literal discriminator is ``tag``."""
    for m in members:
        if isinstance(m, type) and issubclass(m, BaseModel):
            for f in m.model_fields.values():
                if typing.get_origin(f.annotation) is Literal and tag in typing.get_args(
                    f.annotation
                ):
                    return m
    return None


def key_path(loc: tuple[Any, ...]) -> tuple[list[Any], list[str]]:
    """A pydantic error location as the user's keys (the union tags pydantic inserts dropped:
    ``models.knn.knn.k`` -> ``models.knn.k``) and the keys allowed where the last one stands."""
    path: list[Any] = []
    current: list[Any] = [Config]
    allowed: list[str] = []
    for e in loc:
        models = [m for m in current if isinstance(m, type) and issubclass(m, BaseModel)]
        model = next((m for m in models if e in m.model_fields), None)
        if model is not None:
            path.append(e)
            allowed = list(model.model_fields)
            current = _members(model.model_fields[e].annotation)
            continue
        tagged = _tag_member(current, e) if isinstance(e, str) else None
        if tagged is not None and len(current) > 1:
            current = [tagged]  # the tag pydantic put in the location, not a key of the user
            continue
        named = [m for m in current if getattr(m, "__name__", None) == e]
        if named:
            current = named
            continue
        containers = [m for m in current if typing.get_origin(m) in (dict, list)]
        if containers:
            path.append(e)
            current = _members(typing.get_args(containers[0])[-1])
            continue
        path.append(e)
        allowed = sorted({k for m in models for k in m.model_fields})
        current = []
    return path, allowed


def format_key(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> tuple[list[Any], str]:
    """(key path, what is wrong there) of one pydantic error."""
    import difflib

    path, allowed = key_path(tuple(err["loc"]))
    loc = format_key(path)
    given = err.get("input")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6) if path else []
        hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(allowed)}"
        return path, f"{loc}: unknown key{hint}"
    if err["type"] == "missing":
        return path, f"{loc}: required key is missing"
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        key = str(ctx.get("discriminator", "type")).strip("'")
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if err["type"] == "union_tag_not_found":
            kinds = (
                list(REGISTRY)
                if key == "backend"
                else [
                    typing.get_args(m.model_fields["type"].annotation)[0] for m in _members(Source)
                ]
            )
            return path, f"{loc}: needs `{key}:`, one of {', '.join(kinds)}"
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        return path, f"{loc}.{key}: {ctx.get('tag')!r} is not one of {', '.join(tags)}{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return path, f"{loc}: {msg}" + ("" if isinstance(given, dict) else f" (given {given!r})")


def _sweep_value(v: Any) -> str:
    return (f"{v:g}" if isinstance(v, float) else str(v)).replace("/", "_")


_BACKBONE_SWEEPABLE = ("name", "weights", "layers", "pool", "image_size", "center_crop")


def _backbone_label(key: str, value: Any) -> str:
    if key == "name":
        return str(value)
    if key == "layers":
        return "layers" + "".join(map(str, value))
    if key == "weights":
        from defectflow.io import short_hash

        return "w" + (value if value in ("builtin", "pretrained") else short_hash(value, 6))
    return {"image_size": "size", "center_crop": "crop"}.get(key, key) + _sweep_value(value)


def expand_backbone_sweep(backbone: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A backbone entry with lists (``name: [a, b]``, ``layers: [[2, 3], [2, 4]]``...) -> one
    ``(label, settings)`` per combination, in a stable order (a single entry: ``[("", entry)]``).
    The label names only the swept values (``-layers24``, ``-tf_efficientnet_lite1-size256``)."""
    import itertools

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
    import itertools

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


def _expand(data: dict[str, Any]) -> dict[str, Any]:
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


def _defined_in(path: list[Any], files: list[tuple[str, Any]]) -> str | None:
    """The last file that sets ``path`` (or the longest part of it): later files override."""
    best, depth = None, 0
    for name, doc in files:
        node, d = doc, 0
        for key in path:
            listed = isinstance(node, list) and isinstance(key, int) and key < len(node)
            if listed or (isinstance(node, dict) and key in node):
                node, d = node[key], d + 1
            else:
                break
        if d >= depth and d > 0:
            best, depth = name, d
    return best


def parse_config(
    data: dict[str, Any] | None, where: str = "config", files: list[tuple[str, Any]] | None = None
) -> Config:
    """Validate a config mapping (sweeps expanded into model variants). Raises
    :class:`ConfigError` naming each bad key once, the file that sets it (``files``: name and
    content of the YAML files the mapping was merged from), the value given and what is allowed
    (a did-you-mean for a misspelt key)."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"invalid {where}: the top level must be a mapping of keys, not {type(data).__name__}"
        )
    try:
        return Config.model_validate(_expand(dict(data or {})))
    except ConfigError as exc:  # a sweep that cannot be expanded
        raise ConfigError(
            f"invalid {_defined_in(['models'], files or []) or where}:\n  {exc}"
        ) from None
    except ValidationError as exc:
        prefix = ["backbone"] if exc.title == "BackboneConfig" else []
        by_file: dict[str, list[str]] = {}
        for e in exc.errors(include_url=False):
            path, text = _describe({**e, "loc": (*prefix, *e["loc"])})
            by_file.setdefault(_defined_in(path, files or []) or where, []).append(text)
        parts = [
            f"invalid {w}:\n  " + "\n  ".join(dict.fromkeys(lines)) for w, lines in by_file.items()
        ]
        raise ConfigError("\n".join(parts)) from None


def parse_workflow_config(
    data: dict[str, Any], configfiles: list[Any], overrides: list[Any] = ()
) -> Config:
    """The config Snakemake merged from ``configfiles`` (and ``--config``): each file is read
    again to refuse a key written twice (YAML keeps the last silently) and to name, in each
    error, the file that sets the bad key. ``overrides``: the ``--configfile`` files, which take
    precedence over the Snakefile's ``configfile:``."""
    late = [str(f) for f in overrides]
    ordered = [str(f) for f in configfiles if str(f) not in late] + late
    files = [(f, load_yaml(f, error=ConfigError)) for f in dict.fromkeys(ordered)]
    where = "config (from --config or defaults)"
    cfg = parse_config(data, where=where, files=files)
    by_file: dict[str, list[str]] = {}
    for key, text in cfg.missing_files():
        by_file.setdefault(_defined_in(key, files) or where, []).append(
            f"{format_key(key)}: {text}"
        )
    if by_file:
        raise ConfigError(
            "\n".join(f"invalid {w}:\n  " + "\n  ".join(lines) for w, lines in by_file.items())
        )
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    return parse_config(load_yaml(path, error=ConfigError), where=str(path))


def _type_name(annotation: Any) -> str:
    if "discriminator" in str(annotation):
        return "name -> model" if "KnnParams" in str(annotation) else "list of sources"
    text = (
        str(annotation)
        .replace("typing.", "")
        .replace("defectflow.config.", "")
        .replace("defectflow.records.", "")
    )
    return re.sub(r"<class '([^']+)'>", r"\1", text).replace(" | ", " or ")


def config_reference() -> str:
    """Markdown table of every config key (path, type, default, meaning), from the model."""
    rows: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            ann = info.annotation
            if path == "models":
                default = "knn, patchcore, padim (each with its defaults)"
            elif info.default_factory is not None:
                try:
                    default = info.default_factory()  # type: ignore[call-arg]
                except TypeError:
                    default = "(see below)"
                if isinstance(default, BaseModel):
                    default = "(section)"
            else:
                default = "**required**" if info.is_required() else info.default
            desc = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{path}` | `{_type_name(ann)}` | `{default}` | {desc} |")
            sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if sub is None and typing.get_origin(ann) in (typing.Union, types.UnionType):
                args = [
                    a
                    for a in typing.get_args(ann)
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ]
                sub = args[0] if len(args) == 1 else None
            if sub is not None:
                walk(sub, f"{path}.")
            if path == "datasets":
                walk(DatasetConfig, "datasets.<name>.")
            if path == "datasets.<name>.sources":
                for kind, entry in SOURCES.items():
                    src = entry.params
                    walk(src, f"datasets.<name>.sources[type={kind}].")
            if path == "models":
                for mdl in (e.params for e in REGISTRY.values()):
                    kind = mdl.model_fields["backend"].annotation.__args__[0]
                    walk(mdl, f"models.<name>[backend={kind}].")

    walk(Config, "")
    head = "| key | type | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


REFERENCE_BEGIN = "<!-- BEGIN GENERATED: config reference (make docs) -->"
REFERENCE_END = "<!-- END GENERATED -->"


def update_reference(readme: str | Path) -> bool:
    """Rewrite the generated key table inside ``config/README.md``; True if it changed."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(REFERENCE_BEGIN) + len(REFERENCE_BEGIN), text.index(REFERENCE_END)
    new = text[:start] + "\n" + config_reference() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
