"""The ``anomalib`` backend: any anomalib image model by name, trained from the images with
anomalib's Engine, delivered without pickle (the torch model's state goes to safetensors and is
rebuilt from the model name and its init arguments). Thresholds stay outside the model
(anomalib's post-processor is off). Its own forward: it consumes images, not stored features.

Constructor arguments come from the model's signature: ours (pre/post-processor, evaluator,
visualizer) are passed only where the class takes them. For the builtin backbone the ImageNet
weights come from the pip package wherever the model asks timm for pretrained weights (a
teacher), and nowhere else (a student stays random).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from defectflow.errors import ModelError
from defectflow.features.backbone import BUILTIN_ARCHS, builtin_weights_path, remap_in_order
from defectflow.features.preprocess import load_rgb
from defectflow.models.backends.base import Backend, Images
from defectflow.models.backends.params import AnomalibParams

log = logging.getLogger(__name__)

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _model_class(name: str) -> type:
    # lazy: anomalib (an optional extra, imports torch) only when that backend runs
    import anomalib.models as am

    cls = getattr(am, name, None)
    if cls is None:
        raise ModelError(f"anomalib has no model {name!r}")
    return cls


@contextlib.contextmanager
def builtin_pretrained() -> Iterator[None]:
    """While building a model: ``timm.create_model(tf_efficientnet_liteN, pretrained=True)`` (N = 0, 1, 2) loads
    the packaged ImageNet weights instead of downloading (no network needed)."""
    # lazy: timm (it imports torch) only where a backbone is built
    import timm

    original = timm.create_model

    def create(name: str, *args: Any, pretrained: bool = False, **kwargs: Any):
        if name not in BUILTIN_ARCHS or not pretrained:
            return original(name, *args, pretrained=pretrained, **kwargs)
        full = original(name, pretrained=False)
        own = full.state_dict()
        sd = remap_in_order(
            torch.load(builtin_weights_path(name), map_location="cpu", weights_only=True),
            list(own),
            {k: v.shape for k, v in own.items()},
        )
        full.load_state_dict(sd)
        kwargs.pop("pretrained_cfg", None)
        net = original(name, *args, pretrained=False, **kwargs)
        net.load_state_dict(
            {k: v for k, v in full.state_dict().items() if k in net.state_dict()}, strict=False
        )
        return net

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = original


def norm_for(init: dict[str, Any]) -> tuple[list[float], list[float]]:
    return (
        ([0.5] * 3, [0.5] * 3)
        if init.get("backbone") in BUILTIN_ARCHS
        else (list(IMAGENET[0]), list(IMAGENET[1]))
    )


def build_module(
    name: str, init: dict[str, Any], image_size: int, mean: list[float], std: list[float]
):
    """An anomalib LightningModule with our preprocessing and no post-processing."""
    # lazy: anomalib (an optional extra, imports torch) only when that backend runs
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms import v2

    cls = _model_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    ours = {
        "pre_processor": PreProcessor(
            transform=v2.Compose(
                [
                    v2.Resize((image_size, image_size), antialias=True),
                    v2.Normalize(mean=mean, std=std),
                ]
            )
        ),
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
    }
    kwargs = dict(init) | {k: v for k, v in ours.items() if k in accepted}
    unknown = sorted(set(init) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        raise ModelError(
            f"anomalib {name} takes no argument {unknown}; it takes "
            f"{sorted(k for k in accepted if k != 'self' and k not in ours)}"
        )
    try:
        with builtin_pretrained():
            return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"anomalib {name}: cannot build it with init {init}: {exc}") from None


class AnomalibBackend(Backend):
    name = "anomalib"
    maps_final = True
    params: AnomalibParams

    def __init__(self, params: AnomalibParams) -> None:
        super().__init__(params)
        self.module: Any = None
        self.image_size = params.image_size or 224
        self.mean, self.std = norm_for(params.init)

    def _build(self) -> Any:
        return build_module(
            self.params.model, self.params.init, self.image_size, self.mean, self.std
        )

    def fit(self, data: Images, seed: int = 0) -> dict[str, Any]:
        # lazy: anomalib (an optional extra, imports torch) only when that backend runs
        from anomalib.data import Folder
        from anomalib.engine import Engine
        from lightning.pytorch import seed_everything

        self.image_size = data.image_size
        seed_everything(seed, workers=True)
        self.module = self._build()
        with tempfile.TemporaryDirectory(prefix="defectflow-anomalib-") as tmp:
            good = Path(tmp) / "data" / "train" / "good"
            good.mkdir(parents=True)
            for i, p in enumerate(data.paths):
                os.symlink(os.path.abspath(p), good / f"{i:06d}{Path(p).suffix.lower()}")
            dm = Folder(
                name="defectflow",
                root=Path(tmp) / "data",
                normal_dir="train/good",
                train_batch_size=self.params.batch_size,
                eval_batch_size=self.params.batch_size,
                num_workers=0,
                test_split_mode="none",
                val_split_mode="none",
                seed=seed,
            )
            engine = Engine(
                default_root_dir=Path(tmp) / "run",
                max_epochs=self.params.max_epochs,
                accelerator="cpu",
                devices=1,
                logger=False,
                enable_progress_bar=False,
            )
            dm.setup("fit")
            threads = torch.get_num_threads()
            # batched linalg.inv (anomalib's PaDiM) is wrong in torch 2.14 with several threads
            torch.set_num_threads(1)
            try:
                engine.fit(model=self.module, train_dataloaders=dm.train_dataloader())
            finally:
                torch.set_num_threads(threads)
        self.module.eval()
        return {
            "model": self.params.model,
            "n_train": len(data),
        }

    @torch.no_grad()
    def score(self, data: Images) -> tuple[np.ndarray, np.ndarray | None]:
        s = self.image_size
        batch = torch.stack(
            [
                torch.from_numpy(
                    np.asarray(load_rgb(p).resize((s, s), Image.Resampling.BILINEAR), np.float32)
                    .transpose(2, 0, 1)
                    .copy()
                )
                / 255.0
                for p in data.paths
            ]
        )
        out = self.module.model(self.module.pre_processor.transform(batch))
        maps = out.anomaly_map
        if maps is not None:
            maps = maps.reshape(len(data), *maps.shape[-2:]).float().numpy()
        return out.pred_score.flatten().double().numpy(), maps

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            k: v.detach().cpu().contiguous().numpy().copy()
            for k, v in self.module.model.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.module = self._build()
        model = self.module.model
        own = model.state_dict()
        for k, v in state.items():  # fitted buffers start empty: give them their stored shape
            if k in own and tuple(own[k].shape) != v.shape:
                mod_path, _, attr = k.rpartition(".")
                t = getattr(model.get_submodule(mod_path) if mod_path else model, attr)
                t.data = torch.empty(v.shape, dtype=t.dtype)
        missing, unexpected = model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in state.items()}, strict=False
        )
        if unexpected or missing:
            raise ModelError(
                f"checkpoint does not fit anomalib {self.params.model} (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        self.module.eval()

    def extra_meta(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "backbone": {
                "name": self.params.init.get("backbone"),
                "anomalib_model": self.params.model,
            },
        }

    def set_meta(self, meta: dict[str, Any]) -> None:
        self.image_size = int(meta.get("image_size", self.image_size))
        self.mean, self.std = meta.get("mean", self.mean), meta.get("std", self.std)
