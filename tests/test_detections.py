"""COCO and YOLO labels as sources (boxes, polygons, RLE; YOLO images without labels), their bad input,
and a COCO dataset through the workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import save_image
from PIL import Image

from defectflow.config import DatasetConfig
from defectflow.data.ingest import ingest_sources, run_ingest
from defectflow.errors import ManifestError


def _coco(root: Path, boxes: dict[str, list[tuple[str, list[float]]]], size=(60, 40)) -> Path:
    """images/<name>.png and labels.json; boxes: image name -> [(class, [x, y, w, h] pixels)]."""
    classes = sorted({c for bs in boxes.values() for c, _ in bs} | {"scratch"})
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    images, anns = [], []
    for i, (name, bs) in enumerate(sorted(boxes.items()), 1):
        save_image(root / "images" / name, seed=i, size=size)
        images.append({"id": i, "file_name": name, "width": size[0], "height": size[1]})
        for c, b in bs:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat_id[c],
                    "bbox": b,
                    "area": b[2] * b[3],
                    "iscrowd": 0,
                }
            )
    labels = root / "labels.json"
    labels.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": v, "name": k} for k, v in cat_id.items()],
            }
        )
    )
    return labels


def _ingest(src: dict, tmp_path: Path):
    ds = DatasetConfig.model_validate({"sources": [src]})
    return ingest_sources(ds.sources, "d", mask_dir=tmp_path / "masks")


def test_coco_boxes_make_anomalies_with_box_masks(tmp_path):
    labels = _coco(
        tmp_path / "widget",
        {
            "a.png": [("scratch", [10, 5, 20, 10]), ("dent", [40, 20, 10, 10])],
            "b.png": [("label_sticker", [0, 0, 5, 5])],  # not a defect class: a normal image
            "c.png": [],
            "d.png": [("dent", [0, 0, 60, 40])],
        },
    )
    recs = _ingest(
        {
            "type": "coco",
            "path": str(tmp_path / "widget/images"),
            "labels": str(labels),
            "category": "widget",
            "defect_classes": ["scratch", "dent"],
        },
        tmp_path,
    )
    by = {Path(r.image_path).name: r for r in recs}
    assert {k: r.label for k, r in by.items()} == {
        "a.png": "anomaly",
        "b.png": "normal",
        "c.png": "normal",
        "d.png": "anomaly",
    }
    assert by["a.png"].defect_type == "scratch" and by["d.png"].defect_type == "dent"  # largest box
    assert by["b.png"].mask_path is None and all(r.category == "widget" for r in recs)
    mask = np.asarray(Image.open(by["a.png"].mask_path))
    assert (
        mask.shape == (40, 60)
        and mask[5:15, 10:30].min() == 255
        and mask[20:30, 40:50].min() == 255
    )
    assert (mask > 0).sum() == 20 * 10 + 10 * 10
    assert by["a.png"].source.type == "coco" and by["a.png"].source.file == str(labels)


def test_yolo_labels_make_anomalies(tmp_path):
    root = tmp_path / "parts"
    root.mkdir()
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "path": str(root),
                "train": "images/train",
                "val": "images/val",
                "names": {0: "crack", 1: "hole"},
            }
        )
    )
    for split, items in {
        "train": {"p0": "", "p1": "", "p2": "1 0.5 0.5 0.2 0.4\n"},
        "val": {"p3": "0 0.25 0.25 0.5 0.5\n", "p4": ""},
    }.items():
        for stem, txt in items.items():
            save_image(
                root / "images" / split / f"{stem}.png", seed=len(stem + split), size=(50, 50)
            )
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(txt)
    recs = _ingest({"type": "yolo", "path": str(root)}, tmp_path)
    by = {Path(r.image_path).stem: r for r in recs}
    assert sorted(by) == ["p0", "p1", "p2", "p3", "p4"]
    assert [by[k].label for k in sorted(by)] == ["normal", "normal", "anomaly", "anomaly", "normal"]
    assert by["p2"].defect_type == "hole" and by["p3"].defect_type == "crack"
    assert all(r.category == "parts" and r.split is None for r in recs)  # splits are assigned
    mask = np.asarray(Image.open(by["p3"].mask_path))
    assert mask[0:25, 0:25].min() == 255 and mask[26:, 26:].max() == 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("box_outside", "lies outside image 'a.png'"),
        ("unknown_image", "names image_id 99, which `images` does not list"),
        ("unknown_class", "names category_id 42"),
    ],
)
def test_bad_coco_is_refused_naming_the_file_and_nothing_is_written(tmp_path, case, message):
    labels = _coco(
        tmp_path / "w",
        {
            "a.png": [("scratch", [50, 30, 20, 20])]
            if case == "box_outside"
            else [("scratch", [1, 1, 5, 5])]
        },
    )
    data = json.loads(labels.read_text())
    if case == "unknown_image":
        data["annotations"][0]["image_id"] = 99
    if case == "unknown_class":
        data["annotations"][0]["category_id"] = 42
    labels.write_text(json.dumps(data))
    out = tmp_path / "run" / "manifest.jsonl"
    cfg = {"sources": [{"type": "coco", "path": str(tmp_path / "w/images"), "labels": str(labels)}]}
    with pytest.raises(ManifestError) as exc:
        run_ingest(cfg, "d", out, mask_dir=tmp_path / "run" / "box_masks")
    assert message in str(exc.value) and str(labels) in str(exc.value)
    assert not out.exists()


def test_yolo_class_id_not_in_data_yaml_is_refused(tmp_path):
    root = tmp_path / "y"
    root.mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["crack"]}))
    save_image(root / "images/train/a.png", size=(20, 20))
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ManifestError, match=r"a\.txt:1: class id 3 is not in .*data\.yaml"):
        _ingest({"type": "yolo", "path": str(root)}, tmp_path)


def _yolo_root(tmp_path: Path, names, label: str = "0 0.5 0.5 0.2 0.2\n", **yaml_extra) -> Path:
    root = tmp_path / "y"
    root.mkdir(parents=True)
    doc = {"train": "images/train", "names": names, **yaml_extra}
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    save_image(root / "images/train/a.png", size=(20, 20))
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text(label)
    return root


def test_no_label_is_lost_without_a_word(tmp_path):
    """A defect class the labels do not define (a typo), `nc` against `names`, an id a names
    mapping skips, and `Images/`/`Labels/` folders: each refused with the file and the reason,
    where each would have made every image normal."""
    root = _yolo_root(tmp_path / "a", ["crack", "hole"])
    with pytest.raises(
        ManifestError, match=r"defect_classes names \['crak'\].*did you mean 'crack'"
    ):
        _ingest({"type": "yolo", "path": str(root), "defect_classes": ["crak"]}, tmp_path)
    root = _yolo_root(tmp_path / "b", ["crack", "hole"], nc=3)
    with pytest.raises(ManifestError, match=r"`nc: 3` but `names` defines 2 class ids"):
        _ingest({"type": "yolo", "path": str(root)}, tmp_path)
    root = _yolo_root(tmp_path / "c", {0: "crack", 2: "hole"}, label="1 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ManifestError, match=r"a\.txt:1: class id 1 is not in"):
        _ingest({"type": "yolo", "path": str(root)}, tmp_path)
    root = _yolo_root(tmp_path / "d", ["crack"])
    (root / "images").rename(root / "Images")
    (root / "labels").rename(root / "Labels")
    with pytest.raises(ManifestError, match=r"`Images/` would lose every label"):
        _ingest({"type": "yolo", "path": str(root)}, tmp_path)
    labels = _coco(tmp_path / "w", {"a.png": [("scratch", [1, 1, 5, 5])]})
    src = {"type": "coco", "path": str(tmp_path / "w/images"), "labels": str(labels)}
    with pytest.raises(ManifestError, match=r"defect_classes names \['scrach'\]"):
        _ingest({**src, "defect_classes": ["scrach"]}, tmp_path)
    # objects, but none of a defect class: every image would be normal
    labels = _coco(tmp_path / "v", {"a.png": [("dent", [1, 1, 5, 5])], "b.png": []})
    src = {"type": "coco", "path": str(tmp_path / "v/images"), "labels": str(labels)}
    with pytest.raises(ManifestError, match=r"1 objects, none of a defect class"):
        _ingest({**src, "defect_classes": ["scratch"]}, tmp_path)
    assert {r.label for r in _ingest(src, tmp_path)} == {"anomaly", "normal"}


@pytest.mark.slow
def test_coco_dataset_through_the_workflow(workflow_dir, tmp_path):
    """The demo's bracket images re-labelled as COCO boxes (the bounding box of each mask): the
    chain runs to metrics, with box masks for the pixel metrics."""
    from defectflow.config import DemoConfig
    from defectflow.data.demo import generate_demo

    demo = tmp_path / "demo"
    generate_demo(
        demo, DemoConfig(categories=["bracket"], n_train=12, n_test_normal=4, n_test_per_defect=2)
    )
    root = demo / "bracket"
    images, anns, cats = [], [], {}
    for p in sorted(root.rglob("*.png")):
        if "ground_truth" in p.parts:
            continue
        rel = p.relative_to(root).as_posix()
        images.append({"id": len(images) + 1, "file_name": rel, "width": 224, "height": 224})
        if p.parent.name != "good":
            m = (
                np.asarray(Image.open(root / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"))
                > 0
            )
            ys, xs = np.nonzero(m)
            cid = cats.setdefault(p.parent.name, len(cats) + 1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": images[-1]["id"],
                    "category_id": cid,
                    "iscrowd": 0,
                    "bbox": [
                        int(xs.min()),
                        int(ys.min()),
                        int(xs.max() - xs.min() + 1),
                        int(ys.max() - ys.min() + 1),
                    ],
                }
            )
    labels = tmp_path / "instances.json"
    labels.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": v, "name": k} for k, v in cats.items()],
            }
        )
    )
    cfg = {
        "datasets": {
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "boxes": {
                "sources": [
                    {
                        "type": "coco",
                        "path": str(root),
                        "labels": str(labels),
                        "category": "bracket",
                    }
                ]
            },
        },
        "threshold": {"folds": 3},
    }
    (workflow_dir / "coco.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "coco.yaml"],
        cwd=workflow_dir,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads(
        (workflow_dir / "results/boxes/models/patchcore/bracket/metrics.json").read_text()
    )
    # 6 anomalies (2 per defect type): one of each is held out as val (split.val_from_test)
    assert m["image"]["n_anomaly"] == 3 and m["pixel"]["status"] == "ok"
    assert set(m["per_defect_type"]) == {"scratch", "stain", "missing_part"}
    assert len(list((workflow_dir / "results/boxes/box_masks/source-1").glob("*.png"))) == 6


def _yolo(root: Path, labels: dict[str, str | None], split: str = "train", size=(40, 40)) -> Path:
    """images/<split>/<stem>.png, labels/<split>/<stem>.txt (None: no label file) and data.yaml."""
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for k, (stem, txt) in enumerate(sorted(labels.items())):
        save_image(root / "images" / split / f"{stem}.png", seed=k, size=size)
        if txt is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(txt)
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {"path": "/elsewhere/moved", split: f"images/{split}", "names": ["crack", "hole"]}
        )
    )
    return root


def test_yolo_images_without_label_file_are_normal_and_orphan_labels_are_reported(tmp_path):
    """Ultralytics' convention: no label file (or an empty one) = no objects = a normal image. A
    label file whose image is gone is reported (LABEL_ORPHAN), not dropped in silence. The YAML's
    stale `path:` (the dataset was moved) falls back to the YAML's folder."""
    root = _yolo(
        tmp_path / "parts", {"n0": None, "n1": None, "n2": "", "d0": "0 0.5 0.5 0.5 0.5\n"}
    )
    (root / "labels/train/gone.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    recs = _ingest({"type": "yolo", "path": str(root)}, tmp_path)
    images = {Path(r.image_path).stem: r.label for r in recs if r.image_path}
    assert images == {"n0": "normal", "n1": "normal", "n2": "normal", "d0": "anomaly"}
    orphans = [r for r in recs if r.image_path is None]
    assert len(orphans) == 1 and orphans[0].meta["orphan_label"].endswith("gone.txt")
    report = _preflight_cli(root, tmp_path)
    codes = {i["code"]: i for i in report["issues"]}
    assert "LABEL_ORPHAN" in codes and "gone.txt" in codes["LABEL_ORPHAN"]["message"]
    assert report["n_images"] == 4  # read as YOLO, not as an MVTec layout of `images`/`labels`


def test_yolo_segmentation_and_oriented_box_lines_become_polygon_masks(tmp_path):
    tri = "0 0.1 0.1 0.9 0.1 0.1 0.9\n"  # a right triangle: half the image's upper-left
    obb = "1 0.6 0.6 0.9 0.6 0.9 0.9 0.6 0.9\n"  # 4 corners (YOLO-OBB)
    root = _yolo(
        tmp_path / "segs", {"t": tri, "o": obb, "b": "1 0.5 0.5 0.2 0.2 0.87\n"}, size=(100, 100)
    )
    recs = {
        Path(r.image_path).stem: r for r in _ingest({"type": "yolo", "path": str(root)}, tmp_path)
    }
    assert all(r.label == "anomaly" for r in recs.values())
    t = np.asarray(Image.open(recs["t"].mask_path)) > 0
    assert t[15, 15] and t[20, 70] and not t[80, 80] and abs(t.sum() - 3200) < 200  # a triangle
    o = np.asarray(Image.open(recs["o"].mask_path)) > 0
    assert o[75, 75] and not o[50, 50] and abs(o.sum() - 900) < 100
    b = np.asarray(Image.open(recs["b"].mask_path)) > 0  # a box with a confidence column
    assert b.sum() == 20 * 20


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.2\n", "3 coordinates"),
        ("0 0.5 0.5 1.8 0.2\n", "outside the image"),
        ("x 0.5 0.5 0.2 0.2\n", "not numbers"),
        ("7 0.1 0.1 0.2 0.2\n", "class id 7 is not in"),
    ],
)
def test_bad_yolo_lines_are_refused_with_file_line_and_code(tmp_path, line, message):
    root = _yolo(tmp_path / "bad", {"a": line, "b": None})
    report = _preflight_cli(root, tmp_path)
    (issue,) = report["issues"]
    assert issue["code"] == "LABELS_INVALID" and message in issue["message"]
    assert issue["context"]["file"].endswith("a.txt") and issue["context"]["line"] == 1


def test_coco_polygons_rle_and_rotated_boxes_become_masks(tmp_path):
    """Segmentation-only annotations (no bbox) are defects with polygon masks; RLE (crowd)
    masks are decoded; a 5-number (rotated) box is drawn as its rotated rectangle."""
    root = tmp_path / "c"
    for k, name in enumerate(["poly.png", "rle.png", "rot.png", "ok.png"]):
        save_image(root / "images" / name, seed=k, size=(50, 40))
    rle = np.zeros((40, 50), bool)
    rle[10:20, 5:15] = True
    flat = rle.T.ravel()  # column-major runs, starting with background
    runs, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    data = {
        "images": [
            {"id": i + 1, "file_name": n, "width": 50, "height": 40}
            for i, n in enumerate(["poly.png", "rle.png", "rot.png", "ok.png"])
        ],
        "categories": [{"id": 1, "name": "scratch"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 20, 0, 0, 20]]},
            {
                "id": 2,
                "image_id": 2,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": {"size": [40, 50], "counts": runs},
            },
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [25, 20, 20, 10, 90]},
        ],
    }
    labels = root / "annotations.json"
    labels.write_text(json.dumps(data))
    recs = {
        Path(r.image_path).name: r
        for r in _ingest(
            {"type": "coco", "path": str(root / "images"), "labels": str(labels)}, tmp_path
        )
    }
    assert {k: r.label for k, r in recs.items()} == {
        "poly.png": "anomaly",
        "rle.png": "anomaly",
        "rot.png": "anomaly",
        "ok.png": "normal",
    }
    poly = np.asarray(Image.open(recs["poly.png"].mask_path)) > 0
    assert poly[2, 2] and not poly[15, 15] and abs(poly.sum() - 200) < 40
    assert ((np.asarray(Image.open(recs["rle.png"].mask_path)) > 0) == rle).all()
    data["annotations"][1]["segmentation"]["size"] = [50, 40]  # width and height swapped
    data["annotations"][1]["segmentation"]["counts"] = [2000]
    labels.write_text(json.dumps(data))
    with pytest.raises(
        ManifestError, match=r"annotations\[1\].*RLE `size` \[50, 40\] is not image 'rle.png'"
    ):
        _ingest({"type": "coco", "path": str(root / "images"), "labels": str(labels)}, tmp_path)
    rot = np.asarray(Image.open(recs["rot.png"].mask_path)) > 0  # 20 x 10 turned upright
    ys, xs = np.nonzero(rot)
    assert abs((ys.max() - ys.min()) - 20) <= 1 and abs((xs.max() - xs.min()) - 10) <= 1


def test_coco_missing_image_files_are_reported_per_image(tmp_path):
    labels = _coco(tmp_path / "w", {"a.png": [("scratch", [1, 1, 5, 5])], "b.png": []})
    (tmp_path / "w/images/b.png").unlink()
    report = _preflight_cli(labels, tmp_path)
    missing = [i for i in report["issues"] if i["code"] == "IMAGE_MISSING"]
    assert len(missing) == 1 and "b.png" in missing[0]["message"]


def _preflight_cli(path: Path, tmp_path: Path) -> dict:
    out = tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "-m", "defectflow.cli", "preflight", str(path), "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 2), r.stdout + r.stderr
    return json.loads(out.read_text())


def test_roboflow_and_darknet_yolo_layouts_are_read(tmp_path):
    """Roboflow's export: data.yaml names `../train/images` (relative to the dataset root once
    the `../` is dropped, as Ultralytics reads it) and a split that is not there; a Darknet-style
    folder: no YAML, images/ beside labels/, class names in classes.txt."""
    rf = tmp_path / "rf"
    save_image(rf / "train/images/a.png", size=(40, 40))
    save_image(rf / "train/images/b.png", seed=1, size=(40, 40))
    (rf / "train/labels").mkdir(parents=True)
    (rf / "train/labels/a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (rf / "data.yaml").write_text(
        yaml.safe_dump(
            {"train": "../train/images", "val": "../valid/images", "nc": 1, "names": ["scratch"]}
        )
    )
    recs = {
        Path(r.image_path).stem: r for r in _ingest({"type": "yolo", "path": str(rf)}, tmp_path)
    }
    assert {k: r.label for k, r in recs.items()} == {"a": "anomaly", "b": "normal"}
    assert recs["a"].defect_type == "scratch"
    dk = tmp_path / "dk"
    save_image(dk / "images/a.png", size=(40, 40))
    (dk / "labels").mkdir(parents=True)
    (dk / "labels/a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (dk / "classes.txt").write_text("dent\nhole\n")
    (rec,) = _ingest({"type": "yolo", "path": str(dk)}, tmp_path)
    assert rec.label == "anomaly" and rec.defect_type == "hole"


def test_coco_export_quirks_are_read(tmp_path):
    """`annotations: null` (no objects), Windows separators in `file_name`, a `width` that is
    not a number, an empty outline beside a box."""
    root = tmp_path / "q"
    save_image(root / "images/sub/a.png", size=(30, 20))
    save_image(root / "images/b.png", seed=1, size=(30, 20))
    data = {
        "images": [
            {"id": 1, "file_name": "sub\\a.png", "width": "abc", "height": 20},
            {"id": 2, "file_name": "b.png"},
        ],
        "categories": [{"id": 1, "name": "dent"}],
        "annotations": None,
    }
    (root / "l.json").write_text(json.dumps(data))
    src = {"type": "coco", "path": str(root / "images"), "labels": str(root / "l.json")}
    assert {r.label for r in _ingest(src, tmp_path)} == {"normal"}
    data["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "segmentation": [[]]}
    ]
    (root / "l.json").write_text(json.dumps(data))
    recs = {Path(r.image_path).name: r for r in _ingest(src, tmp_path)}
    assert recs["a.png"].label == "anomaly" and recs["b.png"].label == "normal"
    assert (np.asarray(Image.open(recs["a.png"].mask_path)) > 0).sum() == 100


def test_a_bad_label_stops_the_workflow_at_ingest_with_a_coded_report(workflow_dir, tmp_path):
    root = _yolo(tmp_path / "parts", {"a": "0 0.5 0.5 0.2\n", "b": None})
    cfg = {
        "datasets": {
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "parts": {"sources": [{"type": "yolo", "path": str(root)}]},
        }
    }
    (workflow_dir / "parts.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/parts/manifest.jsonl",
            "--cores",
            "1",
            "--configfile",
            "parts.yaml",
        ],
        cwd=workflow_dir,
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode != 0
        and "a.txt:1: 3 coordinates" in (workflow_dir / "logs/parts/ingest.log").read_text()
    )
    report = json.loads((workflow_dir / "logs/parts/ingest_report.json").read_text())
    (issue,) = report["issues"]
    assert issue["code"] == "LABELS_INVALID" and issue["context"]["line"] == 1 and not report["ok"]
    assert not (workflow_dir / "results/parts/manifest.jsonl").exists()


def test_coco_category_defaults_to_the_product_folder_not_images(tmp_path):
    labels = _coco(tmp_path / "line4", {"a.png": [("scratch", [1, 1, 5, 5])]})
    src = {"type": "coco", "path": str(tmp_path / "line4/images"), "labels": str(labels)}
    assert {r.category for r in _ingest(src, tmp_path)} == {"line4"}
    assert {r.category for r in _ingest({**src, "category": "cap"}, tmp_path)} == {"cap"}
