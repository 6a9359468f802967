"""The workflow configuration's model: the source of truth for ``schemas/config.schema.json``
and for every default documented in ``config/README.md``."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from defectflow.codes import CODES
from defectflow.data.sources import REGISTRY as SOURCES
from defectflow.data.sources import Source
from defectflow.features.catalog import BUILTIN_ARCHS, feature_stages, timm_model_names
from defectflow.io import short_hash
from defectflow.models.backends import REGISTRY, entry
from defectflow.models.backends.params import (
    CombinedParams,
    KnnParams,
    PadimParams,
    PatchcoreParams,
)
from defectflow.records import Severity

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def format_key(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


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
    if code not in CODES:
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
        "combined": CombinedParams(backend="combined"),
    }


#: names under results/ that are not datasets' folders
RESERVED_RESULTS = {"backbones": "exported backbones", "run.json": "run record"}


class ThresholdConfig(_Strict):
    policy: Literal["auto", "fpr", "normal_quantile", "f1_optimal", "fixed"] = Field(
        default="auto",
        description="`auto`: f1_optimal when val has at least `min_anomalies` anomalies (by default val is carved "
        "from test: `split.val_from_test`), else fpr. `fpr`: the conformal threshold for a target false-alarm "
        "rate `fpr` on the out-of-sample normal scores (cross-fitted training normals and val normals): its "
        "expected rate on new normals of the same line is at most `fpr`. f1_optimal rests on the held-out val "
        "images (with out-of-fold training normals when val has fewer than `min_anomalies` normals); "
        "normal_quantile is the `quantile` of the same normal scores as fpr (interpolated)",
    )
    fpr: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="fpr: the false-alarm rate to hold on good parts (0.01: one in a hundred); needs at least "
        "1/fpr - 1 normal scores",
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
    leave_one_out: int = Field(
        default=1000,
        ge=0,
        description="cross-fit by leave-one-out (each training normal, or each `group_id`, its own fold) up to "
        "this many training normals, so out-of-sample scores behave like the delivered model's scores of new "
        "good parts; above it, `folds` folds (0: always `folds`)",
    )
    min_anomalies: int = Field(
        default=3, ge=1, description="auto: val anomalies needed to use f1_optimal"
    )

    @model_validator(mode="after")
    def _fixed_needs_value(self) -> ThresholdConfig:
        if self.policy == "fixed" and self.value is None:
            raise ValueError("policy `fixed` needs `threshold.value` (a raw score)")
        return self


class LearningCurveConfig(_Strict):
    in_report: bool = Field(
        default=False,
        description="add the learning curves to the report (each feature model refitted on 8, 16, 32, ... training "
        "normals: about a second fit of each model); `snakemake learning_curve` makes them on their own",
    )
    start: int = Field(default=8, ge=2, description="the smallest subset of training normals")


class SyntheticConfig(_Strict):
    """Seeded synthetic defects made from the training good images: what share of defects a
    threshold catches, stated without a single real defect (`features/synthetic.py`)."""

    enabled: bool = Field(
        default=True,
        description="make them (one embed job per category; every feature model scores them out of "
        "fold, and each threshold states the share of each family it flags)",
    )
    per_image: int = Field(
        default=2, ge=1, le=12, description="synthetic defects made from each training good image"
    )
    max_images: int = Field(
        default=400, ge=6, description="at most this many per category (sources in a seeded order)"
    )


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
    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig,
        description="synthetic defects: a yardstick where no real defect is labelled",
    )
    learning_curve: LearningCurveConfig = Field(
        default_factory=LearningCurveConfig,
        description="how many good images are enough (`snakemake learning_curve`)",
    )
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
            if name in RESERVED_RESULTS:
                raise ValueError(
                    f"dataset name {name!r} is taken by results/{name} (the workflow's own "
                    f"{RESERVED_RESULTS[name]}); rename the dataset"
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

    @model_validator(mode="after")
    def _combined_members(self) -> Config:
        """A combined model's members: the other feature models on its backbone (its default),
        or the names it gives, each checked."""
        for name, m in self.models.items():
            if not entry(m.backend).members:
                continue
            usable = [
                n
                for n, o in self.models.items()
                if n != name
                and entry(o.backend).consumes == "features"
                and not entry(o.backend).members
                and o.backbone_variant == m.backbone_variant
            ]
            wrong = [x for x in m.members if x not in usable]
            if wrong:
                raise ValueError(
                    f"models.{name}.members: {wrong} {'is' if len(wrong) == 1 else 'are'} no "
                    f"feature model on this model's backbone; usable: {usable}"
                )
            m.members = list(m.members) or usable
            if not m.members:
                raise ValueError(
                    f"models.{name}: no feature model to combine (add knn, patchcore or padim)"
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
                elif SOURCES[src.type].labels_file and not (Path(base) / src.labels).is_file():
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
