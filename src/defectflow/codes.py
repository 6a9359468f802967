"""Stable preflight issue codes: default severity and what the user should do.

Codes never change meaning; new codes are added, old ones are not renamed.
``docs/preflight_codes.md`` is generated from this table (a test checks it is current).
"""

from __future__ import annotations

from defectflow.records import Severity

E, W, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

#: code -> (default severity, what it means, what to do)
CODES: dict[str, tuple[Severity, str, str]] = {
    "MANIFEST_UNREADABLE": (
        E,
        "the manifest itself cannot be read: not UTF-8, not valid JSON/CSV, empty, or no image column",
        "fix the file at the line the report names (JSON lines or a JSON array of objects, CSV with a header, Parquet)",
    ),
    "CONFIG_INVALID": (
        E,
        "the config given to `defectflow preflight --config` cannot be used (not YAML, a key written twice, an unknown key or value)",
        "fix the key the message names (config/README.md lists every key)",
    ),
    "LABELS_INVALID": (
        E,
        "a detection label cannot be read as its format defines it: a YOLO line that is neither `class cx cy w h` nor a polygon, coordinates outside the image, a class id the YAML does not name (a `names` mapping that skips it included), a COCO annotation of an unknown image or class, a box or polygon that is not numbers, a `defect_classes` entry the labels do not define",
        "fix the label at the file and line (or annotation) the report names, or the class name in the config",
    ),
    "LABEL_ORPHAN": (
        W,
        "a label file (YOLO .txt) has no image of the same name in the split's image folder: its objects are not used",
        "add the image or delete the label file",
    ),
    "IMAGE_PATH_MISSING": (
        E,
        "a record names no image: its image path field is absent or empty",
        "fill the image path (or map your column with `fields: {image_path: <column>}`), or drop the record",
    ),
    "CATEGORY_MISSING": (
        E,
        "a record has no category",
        "add a category column, or set `category:` on the source",
    ),
    "CATEGORY_INVALID": (
        E,
        "a category name cannot be a folder name (it contains / or \\, or is . or ..)",
        "rename the category",
    ),
    "SPLIT_INVALID": (
        E,
        "a split value is not train/val/test (or a known alias)",
        "fix the value, or leave it empty to let defectflow assign one",
    ),
    "LABEL_INVALID": (
        E,
        "a label value is not normal/anomaly (or a known alias such as good/defective/0/1)",
        "fix the value",
    ),
    "LABEL_MISSING": (
        W,
        "a val/test image has no label, so it cannot be scored in metrics",
        "add labels; unlabeled train images are taken as normal",
    ),
    "ANOMALY_IN_TRAIN": (
        E,
        "an anomalous image is in the train split; models are fitted on normal images only",
        "move it to test, or leave its split empty",
    ),
    "IMAGE_MISSING": (
        E,
        "an image file does not exist",
        "fix the path (relative paths are relative to the manifest's folder or `root:`)",
    ),
    "IMAGE_UNREADABLE": (
        E,
        "an image file cannot be opened as an image",
        "replace the file or drop the record",
    ),
    "IMAGE_TINY": (
        W,
        "an image is smaller than 32 px on a side: far below the model input, its detail is invented by upscaling",
        "check the file; crop or capture at a usable resolution",
    ),
    "IMAGE_ANIMATED": (
        W,
        "an image file holds several frames (animated GIF, multi-page TIFF): only the first is used",
        "export the frame you mean as a single image",
    ),
    "IMAGE_TRUNCATED": (
        E,
        "an image file is truncated or corrupt (pixels do not decode)",
        "re-export or re-copy the file",
    ),
    "MASK_MISSING": (
        E,
        "a record names a mask file that does not exist",
        "fix the mask path or drop it",
    ),
    "MASK_UNREADABLE": (E, "a mask file cannot be decoded", "replace the mask"),
    "MASK_SIZE_MISMATCH": (
        E,
        "a mask's size differs from its image's",
        "export masks at the image's resolution",
    ),
    "MASK_EMPTY": (
        W,
        "an anomalous image's mask has no foreground pixel",
        "draw the defect, or drop the mask (image-level label stays)",
    ),
    "MASK_FULL": (W, "a mask covers (almost) the whole image", "check the mask was not inverted"),
    "MASK_ON_NORMAL": (
        W,
        "a normal image has a mask with foreground",
        "check the label; normal images should have no defect pixels",
    ),
    "MASK_ABSENT": (
        INFO,
        "anomalous test images without masks: pixel metrics are skipped for the category",
        "add masks to get pixel AUROC/AUPRO",
    ),
    "MASK_ORPHAN": (W, "a mask file has no image", "add the image or remove the mask"),
    "DUPLICATE_PATH": (
        W,
        "the same image path is listed more than once in one split",
        "remove the repeated records; only the first is kept",
    ),
    "DUPLICATE_CONTENT": (
        W,
        "identical image bytes under different paths in one split",
        "remove copies; they over-weight one sample",
    ),
    "DUPLICATE_LABEL_CONFLICT": (
        E,
        "identical image content carries different labels",
        "decide the true label",
    ),
    "LEAKAGE_EXACT": (
        E,
        "the same image (path or bytes) is in train/val and in test: test scores would be optimistic",
        "remove the test copy (downgrading this code makes standardize drop it)",
    ),
    "LEAKAGE_NEAR": (
        W,
        "a near-duplicate (perceptual hash) of a train/val image is in test",
        "check for re-shots of the same part; use group_id to keep them in one split",
    ),
    "GROUP_LEAKAGE": (
        E,
        "one group_id (e.g. one physical part) has images in more than one split",
        "put every image of a group in one split",
    ),
    "NO_NORMAL_TRAIN": (
        E,
        "a category has no normal training image: no model can be fitted",
        "add normal images to train (or leave splits empty to have them assigned)",
    ),
    "FEW_TRAIN_IMAGES": (
        W,
        "a category has fewer normal training images than `preflight.min_train_images`",
        "add normal images; models on few images are unstable",
    ),
    "NO_TEST_ANOMALIES": (
        W,
        "a category has no anomalous test image: AUROC/F1 cannot be computed",
        "add labeled defect images to test",
    ),
    "NO_TEST_NORMALS": (
        W,
        "a category has anomalous test images but no normal ones: AUROC and false positives cannot be measured",
        "add normal images to test (or leave their split empty to have some assigned)",
    ),
    "NO_VAL_IMAGES": (
        INFO,
        "a category has no val images: `split.val_from_test` carves val from its labelled test images (default 0.3), else the threshold rests on cross-fitted training normals alone",
        "nothing, or give your own labelled val images (normal and anomalous) to choose the F1-optimal threshold on",
    ),
    "MODE_MIX": (
        W,
        "a category mixes channel layouts (e.g. grayscale and RGB)",
        "fine for the default preprocessing (converted to RGB); check it is intended",
    ),
    "BIT_DEPTH_MIX": (
        W,
        "a category mixes bit depths (e.g. 8 and 16 bit)",
        "export all images at one bit depth; 16-bit images are scaled to 8 bit",
    ),
    "SIZE_MIX": (
        INFO,
        "a category has images of different sizes",
        "fine: images are resized; check aspect ratios are comparable",
    ),
    "MEMORY_PROJECTION": (
        INFO,
        "projected memory of each model for the category (from the backbone's feature shape and the model's settings)",
        "lower `coreset_ratio`, `max_memory_mb` or image size if it is high",
    ),
    "MEMORY_HIGH": (
        W,
        "projected memory of a model exceeds `preflight.max_memory_mb`",
        "lower `coreset_ratio`, image size or training images",
    ),
}


def default_severity(code: str) -> Severity:
    return CODES[code][0]


def codes_markdown() -> str:
    """The code table as Markdown (for docs/preflight_codes.md)."""
    lines = [
        "# Preflight issue codes",
        "",
        "Generated from `src/defectflow/codes.py` (`defectflow codes`). Codes are stable. Change a",
        "severity with `preflight.severity: {CODE: warning}` or drop a code with `preflight.ignore`.",
        "",
        "| code | default severity | meaning | what to do |",
        "|---|---|---|---|",
    ]
    for code, (sev, meaning, todo) in CODES.items():
        lines.append(f"| `{code}` | {sev.value} | {meaning} | {todo} |")
    return "\n".join(lines) + "\n"
