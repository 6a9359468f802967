"""Typed parameters of every backend (torch-free: the config and the Snakefile import this).

Each backend's params model is the source of truth for its config keys, defaults and schema.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class BackendParams(BaseModel):
    """Keys every model entry has."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    seed: int | None = Field(
        default=None,
        description="seed of this model's random choices (default: the top-level `seed`); "
        "`seeds: [0, 1, 2]` in a model entry sweeps it",
    )
    variant_of: str | None = Field(
        default=None, description="set by sweep expansion: the model entry this variant comes from"
    )
    backbone_variant: str | None = Field(
        default=None,
        description="set by a backbone sweep: the id of the backbone this model runs on "
        "(default: `backbone`)",
    )

    def fit_params(self) -> dict[str, Any]:
        """The params that change the fitted model (not `backend`, not the sweep bookkeeping:
        the backbone reaches the model through its features)."""
        return self.model_dump(mode="json", exclude={"backend", "variant_of", "backbone_variant"})

    def memory_mb(
        self, n_train: int, patch_shape: list[int], embedding_dim: int
    ) -> dict[str, float]:
        """Projected memory of fitting on ``n_train`` images: features held while fitting and the
        fitted model (MB). Empty when the backend cannot tell (it reads images, not features)."""
        return {}

    def fit_mb(self, n_train: int, patch_shape: list[int], embedding_dim: int) -> float | None:
        """Memory (MB) a train job holds besides the loaded features: fitting, the cross-fit's
        fold models, scoring temporaries. None when the backend cannot tell."""
        return None


def _mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


class KnnParams(BackendParams):
    backend: Literal["knn"] = Field(
        description="image-level nearest neighbours on pooled embeddings"
    )
    k: int = Field(default=1, ge=1, description="neighbours averaged into the score")

    def memory_mb(
        self, n_train: int, patch_shape: list[int], embedding_dim: int
    ) -> dict[str, float]:
        return {
            "candidates_mb": _mb(n_train * embedding_dim * 4),
            "model_mb": _mb(n_train * embedding_dim * 4),
        }

    def fit_mb(self, n_train: int, patch_shape: list[int], embedding_dim: int) -> float | None:
        # the unit-norm bank, a refitted fold bank, a batch's distances to the bank (float64)
        return _mb(n_train * embedding_dim * 4 * 2 + 32 * n_train * 8 * 3)


class PatchcoreParams(BackendParams):
    backend: Literal["patchcore"] = Field(description="patch memory bank with greedy coreset")
    coreset_ratio: float = Field(
        default=0.1, gt=0, le=1, description="share of training patches kept (up to `max_bank`)"
    )
    max_bank: int = Field(
        default=40000,
        ge=1,
        description="memory bank budget in entries: the bank is `coreset_ratio` of the candidate "
        "patches, at most this many, so its size, the fit's time and scoring stop growing with "
        "the training images",
    )
    max_greedy_pairs: int = Field(
        default=40_000_000_000,
        ge=1,
        description="bound on the global greedy k-center's work (candidates x bank entries); "
        "above it, each image's patches are first reduced to their own greedy coreset "
        "(two-stage, composable: the model card gives both stages' covering radii)",
    )
    projection_dim: int = Field(
        default=128, ge=0, description="random projection for coreset selection (0: none)"
    )
    num_neighbors: int = Field(
        default=9, ge=1, description="neighbours used to re-weight the image score"
    )
    max_memory_mb: int = Field(
        default=4000,
        ge=16,
        description="the projected candidates of the global greedy may use at most this "
        "(else each image is first reduced to its own greedy coreset)",
    )
    search: Literal["auto", "exact", "ivf"] = Field(
        default="auto",
        description="nearest-neighbour search: `exact` (every bank entry), `ivf` (inverted-file "
        "index: image scores stay exact, map patches may be overstated), `auto` (ivf from "
        "`ivf_min_bank` entries on the CPU; exact on a GPU)",
    )
    ivf_min_bank: int = Field(
        default=10000, ge=1, description="bank size from which `search: auto` uses the index"
    )
    ivf_lists: int = Field(
        default=0, ge=0, description="index lists (k-means cells; 0: about sqrt(bank size))"
    )
    ivf_probe: int = Field(
        default=8, ge=1, description="lists searched per patch (more: slower, fewer misses)"
    )

    def sizes(self, n_train: int, patch_shape: list[int]) -> tuple[int, int, int]:
        """(bank entries, projected dimension, candidates the global greedy holds) when
        fitting on ``n_train`` images: what the fit's memory follows from."""
        c, h, w = patch_shape
        proj = self.projection_dim if 0 < self.projection_dim < c else c
        bank = min(self.max_bank, max(1, int(n_train * h * w * self.coreset_ratio)))
        room = min(self.max_memory_mb * 2**20 // (4 * proj), self.max_greedy_pairs // bank)
        return bank, proj, min(n_train * h * w, max(bank, room))

    def memory_mb(
        self, n_train: int, patch_shape: list[int], embedding_dim: int
    ) -> dict[str, float]:
        bank, proj, rows = self.sizes(n_train, patch_shape)
        return {"candidates_mb": _mb(rows * proj * 4), "model_mb": _mb(bank * patch_shape[0] * 4)}

    def fit_mb(self, n_train: int, patch_shape: list[int], embedding_dim: int) -> float | None:
        bank, proj, rows = self.sizes(n_train, patch_shape)
        # the projected candidates, their distances and norms; the delivered bank, one fold bank
        # and the index's sorted copy; a projected chunk; a greedy pass's block; a scored batch
        chunks = 64 * 2**20 + 32768 * 1024 * 4 + 2 * 64 * 2**20
        return _mb(rows * (proj * 4 + 16) + 3 * bank * (patch_shape[0] + 1) * 4 + chunks)


class PadimParams(BackendParams):
    backend: Literal["padim"] = Field(description="per-position Gaussian, Mahalanobis distance")
    n_features: int = Field(
        default=0, ge=0, description="random channel subset size (0: all channels)"
    )
    epsilon: float = Field(default=0.01, gt=0, description="covariance regularisation")

    def memory_mb(
        self, n_train: int, patch_shape: list[int], embedding_dim: int
    ) -> dict[str, float]:
        c, h, w = patch_shape
        k = self.n_features or c
        return {"candidates_mb": _mb(n_train * h * w * c * 2), "model_mb": _mb(h * w * k * k * 4)}

    def fit_mb(self, n_train: int, patch_shape: list[int], embedding_dim: int) -> float | None:
        c, h, w = patch_shape
        k = self.n_features or c
        # per position: the delivered sums, a fold's held-out and remaining sums, an outer
        # product, the covariance and its inverse (float64), two float32 inverses; a chunk
        return _mb(h * w * k * k * 56 + 3 * 32 * k * h * w * 8)


class CombinedParams(BackendParams):
    backend: Literal["combined"] = Field(
        description="the other feature models of the category as one detector: each member's "
        "score becomes a p-value against its own leave-one-out good scores, and their "
        "-log p are summed (Fisher); calibrated like any model, on its own out-of-sample scores"
    )
    members: list[str] = Field(
        default_factory=list,
        description="model names to combine (default: every other feature model of the config on "
        "the same backbone)",
    )

    def fit_mb(self, n_train: int, patch_shape: list[int], embedding_dim: int) -> float | None:
        return 500.0  # members' checkpoints and score tables: no features are loaded


@functools.cache
def anomalib_model_names() -> tuple[str, ...]:
    """The image models anomalib exports, read from its source without importing it (importing
    anomalib costs seconds; the config is parsed by every Snakemake job)."""
    spec = importlib.util.find_spec("anomalib")
    if spec is None or not spec.submodule_search_locations:
        return ()
    init = Path(next(iter(spec.submodule_search_locations))) / "models" / "image" / "__init__.py"
    if not init.is_file():
        return ()
    for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return tuple(sorted(ast.literal_eval(node.value)))
    return ()


@functools.cache
def anomalib_init_params(name: str) -> frozenset[str] | None:
    """The keyword arguments of anomalib image model ``name``'s constructor, read from its
    source without importing it (anomalib/models/image/<pkg>/lightning_model.py); None where
    that cannot be told (a model that takes ``**kwargs``, a layout this does not know)."""
    spec = importlib.util.find_spec("anomalib")
    if spec is None or not spec.submodule_search_locations:
        return None
    image = Path(next(iter(spec.submodule_search_locations))) / "models" / "image"
    try:
        pkg = next(
            node.module
            for node in ast.walk(ast.parse((image / "__init__.py").read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom)
            and node.module
            and any(a.name == name for a in node.names)
        )
        src = (image / pkg / "lightning_model.py").read_text(encoding="utf-8")
    except (StopIteration, OSError):
        return None
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ClassDef) and node.name == name:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    if fn.args.kwarg is not None:
                        return None
                    return frozenset(a.arg for a in fn.args.args + fn.args.kwonlyargs) - {"self"}
    return None


class AnomalibParams(BackendParams):
    backend: Literal["anomalib"] = Field(
        description="train an anomalib image model by name from the images (its own forward)"
    )
    model: str = Field(description="anomalib model class, e.g. Padim, Patchcore, Stfpm, Dfm")
    init: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the model class (checked against its signature)",
    )
    image_size: int | None = Field(
        default=None, ge=32, description="input side (default: backbone.image_size)"
    )
    max_epochs: int = Field(
        default=1, ge=1, description="training epochs (1 for the memory-bank models)"
    )
    batch_size: int = Field(default=8, ge=1, description="training batch size")

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        names = anomalib_model_names()
        if names and v not in names:
            close = [n for n in names if n.lower() == v.lower()]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"anomalib has no image model {v!r}{hint} Known: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _known_init(self) -> AnomalibParams:
        """`init` keys against the model's constructor (read from anomalib's source), so a
        typo stops the config check, not training 20 s in."""
        accepted = anomalib_init_params(self.model)
        unknown = sorted(set(self.init) - accepted) if accepted is not None else []
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(accepted or ()), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"init: anomalib {self.model} takes no argument {unknown}{hint} It takes: "
                f"{', '.join(sorted(accepted or ()))}"
            )
        return self
