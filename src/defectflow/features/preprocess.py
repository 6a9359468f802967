"""Image preprocessing shared by embedding (training) and inference: one function, one spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

#: px: an image smaller than this on a side carries too little for a model input of 224 px
MIN_SIDE = 32


class PreprocessSpec(BaseModel):
    """Everything that turns a file into the backbone's input tensor (recorded in infer_config)."""

    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(default=224, description="square side the image is resized to")
    resize: str = Field(default="bilinear", description="PIL resampling filter")
    center_crop: int | None = Field(
        default=None, description="crop side after resizing (None: no crop)"
    )
    mean: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])

    @property
    def out_size(self) -> int:
        return self.center_crop or self.image_size


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB: grayscale is repeated to 3 channels, 16-bit is scaled to 8 bit,
    alpha is dropped."""
    img = Image.open(path)
    img.load()
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """A decoded image as 8-bit RGB (see :func:`load_rgb`)."""
    if img.mode.startswith("I;16") or img.mode in {"I", "F"}:
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def to_array(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """PIL image -> normalized float32 array [3, S, S]."""
    resample = getattr(Image.Resampling, spec.resize.upper())
    img = img.resize((spec.image_size, spec.image_size), resample)
    if spec.center_crop:
        off = (spec.image_size - spec.center_crop) // 2
        img = img.crop((off, off, off + spec.center_crop, off + spec.center_crop))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """File -> backbone input. The one function training and inference share."""
    return to_array(load_rgb(path), spec)
