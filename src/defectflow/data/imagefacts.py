"""Per-file facts for preflight and standardization: header reads for every file, full decode
(truncation, perceptual hash, mask coverage) in a process pool."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from defectflow.tables import read_table, write_table

log = logging.getLogger(__name__)

Image.MAX_IMAGE_PIXELS = (
    400_000_000  # industrial line-scan images are big; still stop decompression bombs
)

_CHANNELS = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I": 1,
    "F": 1,
    "LA": 2,
    "PA": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "RGBA": 4,
    "CMYK": 4,
}
_TRAILERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}


class ImageFacts(BaseModel):
    """What preflight learned about one image or mask file."""

    model_config = ConfigDict(extra="forbid")
    path: str
    kind: str = Field(description="image | mask")
    exists: bool
    readable: bool = Field(description="header could be parsed and, in full mode, pixels decoded")
    error: str | None = None
    truncated: bool = False
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    channels: int | None = None
    bit_depth: int | None = None
    sha256: str | None = None
    dhash: str | None = Field(
        default=None, description="256-bit difference hash (hex), full mode only"
    )
    mask_fraction: float | None = Field(
        default=None, description="share of foreground pixels (masks)"
    )
    n_frames: int = Field(
        default=1, description="frames in the file (animated GIF, multi-page TIFF)"
    )


def bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in {"I", "F"}:
        return 32
    return 8


def channels(mode: str) -> int:
    return 1 if mode.startswith("I;16") else _CHANNELS.get(mode, 3)


DHASH_SIDE = 16


def dhash(img: Image.Image) -> str:
    """256-bit difference hash (hex): robust to resizing, recompression and brightness changes,
    fine enough not to confuse different shots of similar-looking parts."""
    small = np.asarray(
        img.convert("L").resize((DHASH_SIDE + 1, DHASH_SIDE), Image.Resampling.BILINEAR),
        dtype=np.int16,
    )
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return np.packbits(bits).tobytes().hex()


def inspect_file(path: str, kind: str, full: bool) -> ImageFacts:
    """Facts about one file. Never raises for bad files: problems are recorded in the result."""
    p = Path(path)
    try:
        found = p.is_file()
        why = (
            "a symlink that leads nowhere (broken or a loop)"
            if p.is_symlink()
            else "file not found"
        )
    except (OSError, ValueError) as exc:  # a NUL byte, a name longer than the filesystem allows
        found, why = False, f"not a valid path here: {exc}"
    if not found:
        if "://" in path:
            why = "a URL: defectflow reads local files only; download the images first"
        return ImageFacts(path=path, kind=kind, exists=False, readable=False, error=why)
    try:
        data = p.read_bytes()
    except OSError as exc:
        return ImageFacts(
            path=path, kind=kind, exists=True, readable=False, error=f"cannot read: {exc}"
        )
    facts = ImageFacts(
        path=path, kind=kind, exists=True, readable=False, sha256=hashlib.sha256(data).hexdigest()
    )

    try:
        img = Image.open(io.BytesIO(data))
        facts.format, facts.mode = img.format, img.mode
        facts.width, facts.height = img.size
        facts.channels, facts.bit_depth = channels(img.mode), bit_depth(img.mode)
        facts.n_frames = int(getattr(img, "n_frames", 1) or 1)
    except UnidentifiedImageError:
        facts.error = (
            "not a readable image: unknown or damaged format (first bytes: " + repr(data[:8]) + ")"
        )
        return facts
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        facts.error = f"not a readable image: {exc}"
        return facts
    trailer = _TRAILERS.get(img.format or "")
    if trailer is not None and trailer not in data[-64:]:
        facts.truncated = True
        facts.error = (
            f"file ends early: no {img.format} end marker (truncated or still being written)"
        )
        return facts
    if full or kind == "mask":
        try:
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            facts.truncated = "truncated" in str(exc).lower()
            facts.error = f"cannot decode pixels: {exc}"
            return facts
        if kind == "mask":
            arr = np.asarray(img.convert("L") if img.mode not in {"L", "1", "I;16", "I"} else img)
            facts.mask_fraction = float((arr > 0).mean()) if arr.size else 0.0
        if full:
            facts.dhash = dhash(img)
    facts.readable = True
    return facts


def _inspect_chunk(items: list[tuple[str, str]], full: bool) -> list[ImageFacts]:
    return [inspect_file(p, k, full) for p, k in items]


def inspect_files(
    items: list[tuple[str, str]], full: bool, workers: int = 0, chunk: int = 64
) -> list[ImageFacts]:
    """Inspect ``(path, kind)`` pairs, in parallel when there are many. Order is preserved."""
    workers = workers or os.cpu_count() or 1
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    desc = "verify images" if full else "read headers"
    out: list[ImageFacts] = []
    bar = tqdm(total=len(items), desc=desc, unit="file", mininterval=2.0, disable=len(items) < 200)
    if workers == 1 or len(chunks) <= 1:
        for c in chunks:
            out.extend(_inspect_chunk(c, full))
            bar.update(len(c))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_inspect_chunk, chunks, [full] * len(chunks)):
                out.extend(res)
                bar.update(len(res))
    bar.close()
    return out


def write_facts(facts: list[ImageFacts], path: str | Path) -> None:
    """Write the facts table (``image_facts.parquet``)."""

    write_table(path, [f.model_dump(mode="json") for f in facts], ImageFacts, "image_facts")


def read_facts(path: str | Path) -> dict[tuple[str, str], ImageFacts]:
    return {
        (r["path"], r["kind"]): ImageFacts.model_validate(r)
        for r in read_table(path, ImageFacts, "image_facts")
    }
