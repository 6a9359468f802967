"""Train any anomalib image model by name from the standardized table, and deliver it without
pickle: the torch model's state goes to safetensors and is rebuilt from the model name and its
init arguments. Thresholds stay outside the model (anomalib's post-processor is off)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from defectflow.backbone import BUILTIN_ARCH, builtin_weights_path, remap_in_order
from defectflow.errors import ModelError

log = logging.getLogger(__name__)

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _transform(image_size: int, mean: list[float], std: list[float]):
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.Resize((image_size, image_size), antialias=True), v2.Normalize(mean=mean, std=std)]
    )


def _model_class(name: str) -> type:
    import anomalib.models as am

    cls = getattr(am, name, None)
    if cls is None:
        known = sorted(
            n for n in dir(am) if n[:1].isupper() and not n.startswith(("Anomalib", "Base"))
        )
        raise ModelError(f"anomalib has no model {name!r}; known: {known}")
    return cls


def build_module(
    name: str, init: dict[str, Any], image_size: int, mean: list[float], std: list[float]
):
    """An anomalib LightningModule with our preprocessing and no post-processing/visualizer."""
    from anomalib.pre_processing import PreProcessor

    kwargs = dict(init)
    builtin = kwargs.get("backbone") == BUILTIN_ARCH
    if builtin:
        kwargs["pre_trained"] = False  # weights come from the package below, not from a hub
    try:
        module = _model_class(name)(
            **kwargs, pre_processor=PreProcessor(transform=_transform(image_size, mean, std)),
            post_processor=False, evaluator=False, visualizer=False,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise ModelError(f"anomalib {name}: cannot build it with init {init}: {exc}") from None
    if builtin:
        load_builtin_backbone(module)
    return module


def load_builtin_backbone(module: torch.nn.Module) -> int:
    """Load the packaged ImageNet lite0 weights into every timm extractor of ``module``."""
    import timm
    from anomalib.models.components.feature_extractors import TimmFeatureExtractor

    full = timm.create_model(BUILTIN_ARCH)
    own = full.state_dict()
    sd = remap_in_order(
        torch.load(builtin_weights_path(), map_location="cpu", weights_only=True),
        list(own),
        {k: v.shape for k, v in own.items()},
    )
    n = 0
    for sub in module.modules():
        if isinstance(sub, TimmFeatureExtractor) and sub.backbone == BUILTIN_ARCH:
            fe = sub.feature_extractor
            fe.load_state_dict({k: v for k, v in sd.items() if k in fe.state_dict()}, strict=True)
            n += 1
    if n == 0:
        raise ModelError(
            "no tf_efficientnet_lite0 feature extractor found in the anomalib model to load weights into"
        )
    return n


def _stage(paths: list[str], root: Path) -> Path:
    d = root / "train" / "good"
    d.mkdir(parents=True)
    for i, p in enumerate(paths):
        os.symlink(os.path.abspath(p), d / f"{i:06d}{Path(p).suffix.lower()}")
    return d


def train_anomalib(paths: list[str], name: str, init: dict[str, Any], image_size: int, mean: list[float], std: list[float],
                   max_epochs: int = 1, batch_size: int = 8, seed: int = 0) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Fit an anomalib model on normal training images with anomalib's Engine."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True)
    module = build_module(name, init, image_size, mean, std)
    with tempfile.TemporaryDirectory(prefix="defectflow-anomalib-") as tmp:
        root = Path(tmp)
        _stage(paths, root / "data")
        dm = Folder(name="defectflow", root=root / "data", normal_dir="train/good", train_batch_size=batch_size, eval_batch_size=batch_size,
                    num_workers=0, test_split_mode="none", val_split_mode="none", seed=seed)  # fmt: skip
        engine = Engine(
            default_root_dir=root / "run",
            max_epochs=max_epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
        )  # fmt: skip  (its own checkpoint goes to the temporary folder)
        t = time.perf_counter()
        dm.setup("fit")
        threads = torch.get_num_threads()
        if name.lower() == "padim":
            # anomalib's PaDiM inverts its covariances with batched linalg.inv, which torch 2.14
            # gets wrong on CPU with more than one thread: fit it single-threaded
            torch.set_num_threads(1)
        try:
            engine.fit(model=module, train_dataloaders=dm.train_dataloader())
        finally:
            torch.set_num_threads(threads)
        dt = time.perf_counter() - t
    module.eval()
    return module, {"fit_seconds": round(dt, 3), "n_train": len(paths)}


class AnomalibRunner:
    """Scores PIL images with a rebuilt anomalib model (raw scores and maps)."""

    uses_patches = False
    name = "anomalib"

    def __init__(self, module: Any, image_size: int) -> None:
        self.module = module.eval()
        self.image_size = image_size

    @torch.no_grad()
    def score_images(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor | None]:
        from torchvision.transforms.v2.functional import pil_to_tensor

        batch = (
            torch.stack([pil_to_tensor(im).float() / 255.0 for im in images])
            if len({im.size for im in images}) == 1
            else None
        )
        if batch is None:  # different sizes: resize each first (the transform resizes anyway)
            batch = torch.stack(
                [
                    pil_to_tensor(
                        im.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
                    ).float()
                    / 255.0
                    for im in images
                ]
            )
        x = self.module.pre_processor.transform(batch)
        out = self.module.model(x)
        scores = out.pred_score.flatten().float()
        maps = out.anomaly_map
        if maps is not None:
            maps = maps.reshape(len(images), *maps.shape[-2:]).float()
        return scores, maps


def save_anomalib(module: Any, path: str | Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from defectflow.io import atomic_path

    state = {k: v.detach().contiguous().clone() for k, v in module.model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"defectflow": json.dumps(meta, sort_keys=True)})


def load_anomalib(path: str | Path, meta: dict[str, Any]) -> AnomalibRunner:
    from safetensors.torch import load_file

    p = meta["params"]
    module = build_module(
        p["model"], p.get("init", {}), meta["image_size"], meta["mean"], meta["std"]
    )
    state = load_file(str(path))
    own = module.model.state_dict()
    for k, v in state.items():  # fitted buffers start empty: give them their stored shape
        if k in own and own[k].shape != v.shape:
            module.model.get_buffer(k).resize_(v.shape) if "." not in k else _resize_nested(
                module.model, k, v.shape
            )
    missing, unexpected = module.model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.startswith("feature_extractor")]:
        raise ModelError(
            f"{path}: checkpoint does not fit anomalib {p['model']} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return AnomalibRunner(module, meta["image_size"])


def _resize_nested(root: torch.nn.Module, key: str, shape: torch.Size) -> None:
    mod_path, _, attr = key.rpartition(".")
    mod = root.get_submodule(mod_path)
    t = getattr(mod, attr)
    t.data = torch.empty(shape, dtype=t.dtype)
