"""What every source type shares: strict params, the image extensions, finding images and masks."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from defectflow.manifests import IMAGE_EXTENSIONS


class SourceParams(BaseModel):
    """A source's keys in the config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def find_mask(mask_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask", stem):
        for ext in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
            p = mask_dir / f"{name}{ext}"
            if p.exists():
                return p
    return None
