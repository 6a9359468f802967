import json
import shutil

import numpy as np
import pytest
from conftest import save_image, save_mask, write_jsonl
from PIL import Image

from defectflow.codes import CODES
from defectflow.config import DatasetConfig, PreflightConfig
from defectflow.data.ingest import ingest_sources, write_manifest
from defectflow.data.preflight import preflight_records, run_preflight
from defectflow.data.preflight_report import read_report
from defectflow.errors import PreflightFailed

TRIGGERED: set[str] = set()


def _run(records, **cfg):
    report, facts = preflight_records(records, PreflightConfig(threads=1, **cfg), "t", "m")
    TRIGGERED.update(i.code for i in report.issues)
    return report


def _by_code(report):
    out = {}
    for i in report.issues:
        out.setdefault(i.code, []).append(i)
    return out


@pytest.fixture
def zoo(tmp_path):
    """A manifest with one record per problem; returns (records, line of each problem)."""
    d = tmp_path
    rows, line = [], {}

    def add(key, **row):
        rows.append(row)
        line[key] = len(rows)

    for i in range(12):
        add(
            f"train{i}",
            image=str(save_image(d / f"train{i}.png", i)),
            category="c",
            split="train",
            label="normal",
        )
    add("nocat", image=str(save_image(d / "nocat.png", 90)), split="train")
    add(
        "badsplit",
        image=str(save_image(d / "s.png", 91)),
        category="c",
        split="holdout",
        label="normal",
    )
    add(
        "badlabel",
        image=str(save_image(d / "l.png", 92)),
        category="c",
        split="test",
        label="maybe",
    )
    add("nolabel", image=str(save_image(d / "n.png", 93)), category="c", split="test")
    add(
        "anotrain",
        image=str(save_image(d / "a.png", 94)),
        category="c",
        split="train",
        label="anomaly",
    )
    add("missing", image=str(d / "gone.png"), category="c", split="test", label="normal")
    (d / "text.png").write_text("not an image")
    add("unreadable", image=str(d / "text.png"), category="c", split="test", label="normal")
    data = save_image(d / "full.png", 95, size=(64, 64)).read_bytes()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    add("truncated", image=str(d / "trunc.png"), category="c", split="test", label="normal")
    add(
        "maskmissing",
        image=str(save_image(d / "m1.png", 96)),
        category="c",
        split="test",
        label="anomaly",
        mask=str(d / "nomask.png"),
    )
    (d / "badmask.png").write_bytes(b"\x89PNG garbage")
    add(
        "maskunreadable",
        image=str(save_image(d / "m2.png", 97)),
        category="c",
        split="test",
        label="anomaly",
        mask=str(d / "badmask.png"),
    )
    add(
        "masksize",
        image=str(save_image(d / "m3.png", 98)),
        category="c",
        split="test",
        label="anomaly",
        mask=str(save_mask(d / "small_mask.png", size=(16, 16))),
    )
    add(
        "maskempty",
        image=str(save_image(d / "m4.png", 99)),
        category="c",
        split="test",
        label="anomaly",
        mask=str(save_mask(d / "empty_mask.png", fill=0)),
    )
    add(
        "maskfull",
        image=str(save_image(d / "m5.png", 100)),
        category="c",
        split="test",
        label="anomaly",
        mask=str(save_mask(d / "full_mask.png", fill=1)),
    )
    add(
        "masknormal",
        image=str(save_image(d / "m6.png", 101)),
        category="c",
        split="test",
        label="normal",
        mask=str(save_mask(d / "n_mask.png")),
    )
    add(
        "maskabsent",
        image=str(save_image(d / "m7.png", 102)),
        category="c",
        split="test",
        label="anomaly",
    )
    add("orphan", image="", category="c", mask=str(save_mask(d / "orphan_mask.png")))
    add("duppath", image=str(d / "train0.png"), category="c", split="train", label="normal")
    shutil.copy(d / "train1.png", d / "copy1.png")
    add("dupcontent", image=str(d / "copy1.png"), category="c", split="train", label="normal")
    add(
        "conflict_a",
        image=str(save_image(d / "x1.png", 103)),
        category="c",
        split="test",
        label="normal",
    )
    shutil.copy(d / "x1.png", d / "x2.png")
    add("conflict_b", image=str(d / "x2.png"), category="c", split="test", label="anomaly")
    shutil.copy(d / "train2.png", d / "leak.png")
    add("leak", image=str(d / "leak.png"), category="c", split="test", label="normal")
    near = np.asarray(Image.open(d / "train3.png"), dtype=np.int16) + 3
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(d / "near.png")
    add("near", image=str(d / "near.png"), category="c", split="test", label="normal")
    add(
        "group_a",
        image=str(save_image(d / "g1.png", 104)),
        category="c",
        split="train",
        label="normal",
        group="part-1",
    )
    add(
        "group_b",
        image=str(save_image(d / "g2.png", 105)),
        category="c",
        split="test",
        label="normal",
        group="part-1",
    )
    add(
        "rgb",
        image=str(save_image(d / "rgb.png", 106, mode="RGB")),
        category="c",
        split="train",
        label="normal",
    )
    Image.fromarray(np.full((32, 32), 4000, dtype=np.uint16)).save(d / "deep.png")
    add("deep", image=str(d / "deep.png"), category="c", split="train", label="normal")
    add(
        "wide",
        image=str(save_image(d / "wide.png", 107, size=(48, 32))),
        category="c",
        split="train",
        label="normal",
    )
    add(
        "empty_cat",
        image=str(save_image(d / "e.png", 108)),
        category="emptycat",
        split="test",
        label="anomaly",
    )
    add(
        "small_cat",
        image=str(save_image(d / "sm.png", 109)),
        category="smallcat",
        split="train",
        label="normal",
    )
    add(
        "badcat",
        image=str(save_image(d / "bc.png", 110)),
        category="a/b",
        split="train",
        label="normal",
    )
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(d / "tiny.png")
    add("tiny", image=str(d / "tiny.png"), category="c", split="train", label="normal")
    frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (0, 200)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    add("animated", image=str(d / "anim.gif"), category="c", split="train", label="normal")
    (d / "loop_a.png").symlink_to(d / "loop_b.png")
    (d / "loop_b.png").symlink_to(d / "loop_a.png")
    add("symlink_loop", image=str(d / "loop_a.png"), category="c", split="test", label="normal")
    add(
        "path_label_a",
        image=str(save_image(d / "pl.png", 111)),
        category="c",
        split="test",
        label="normal",
    )
    add("path_label_b", image=str(d / "pl.png"), category="c", split="test", label="anomaly")
    for i in range(3):
        add(
            f"nn_train{i}",
            image=str(save_image(d / f"nn{i}.png", 120 + i)),
            category="notestnormal",
            split="train",
        )
    add(
        "nn_test",
        image=str(save_image(d / "nnt.png", 130)),
        category="notestnormal",
        split="test",
        label="anomaly",
    )
    m = write_jsonl(d / "zoo.jsonl", rows)
    recs = ingest_sources(
        DatasetConfig.model_validate({"sources": [{"type": "manifest", "path": str(m)}]}).sources,
        "t",
    )
    return recs, line


EXPECT_AT_LINE = {
    "CATEGORY_MISSING": "nocat",
    "CATEGORY_INVALID": "badcat",
    "SPLIT_INVALID": "badsplit",
    "LABEL_INVALID": "badlabel",
    "LABEL_MISSING": "nolabel",
    "ANOMALY_IN_TRAIN": "anotrain",
    "IMAGE_MISSING": "missing",
    "IMAGE_UNREADABLE": "unreadable",
    "IMAGE_TRUNCATED": "truncated",
    "MASK_MISSING": "maskmissing",
    "MASK_UNREADABLE": "maskunreadable",
    "MASK_SIZE_MISMATCH": "masksize",
    "MASK_EMPTY": "maskempty",
    "MASK_FULL": "maskfull",
    "MASK_ON_NORMAL": "masknormal",
    "MASK_ORPHAN": "orphan",
    "DUPLICATE_PATH": "duppath",
    "DUPLICATE_CONTENT": "dupcontent",
    "DUPLICATE_LABEL_CONFLICT": "conflict_b",
    "LEAKAGE_EXACT": "leak",
    "LEAKAGE_NEAR": "near",
    "IMAGE_TINY": "tiny",
    "IMAGE_ANIMATED": "animated",
}


def test_bad_files_and_labels_a_new_user_brings(zoo):
    recs, line = zoo
    by = _by_code(_run(recs))
    loop = [i for i in by["IMAGE_MISSING"] if i.context["line"] == line["symlink_loop"]]
    assert loop and "symlink that leads nowhere" in loop[0].message  # a loop: no traceback
    conflict = [
        i for i in by["DUPLICATE_LABEL_CONFLICT"] if i.context["line"] == line["path_label_b"]
    ]
    assert (
        conflict and "['anomaly', 'normal']" in conflict[0].message
    )  # one file, two labels: an error
    assert {i.context["category"] for i in by["NO_TEST_NORMALS"]} == {"emptycat", "notestnormal"}


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("utf16.jsonl", '{"image": "a.png", "category": "c"}\n'.encode("utf-16"), None),
        ("empty.jsonl", b"", None),
        ("header.csv", b"image,category\n", None),
        ("truncated.jsonl", b'{"image": "a.png", "category": "c"}\n{"image": "a.p', 2),
        ("bad_line.jsonl", b'{"image": "a.png"}\nnot json\n{"image": "b.png"}\n', 2),
        ("no_images.jsonl", b'{"image": "", "category": "c", "mask": "m.png"}\n', 1),
    ],
)
def test_unreadable_manifest_still_gives_a_report_with_file_and_line(tmp_path, name, content, line):
    from defectflow.data.preflight_report import unreadable_manifest_report
    from defectflow.errors import ManifestError

    m = tmp_path / name
    m.write_bytes(content)
    with pytest.raises(ManifestError) as exc:
        ingest_sources(
            DatasetConfig.model_validate(
                {"sources": [{"type": "manifest", "path": str(m)}]}
            ).sources,
            "t",
        )
    report = unreadable_manifest_report(exc.value, "t", str(m), PreflightConfig())
    (issue,) = report.issues
    assert not report.ok and issue.code == "MANIFEST_UNREADABLE" and issue.context["file"] == str(m)
    assert issue.context.get("line") == line
    TRIGGERED.add(issue.code)


def test_records_without_a_valid_image_path_are_coded_at_their_line_by_the_cli(tmp_path):
    """A record with no image field, a path with a NUL byte, a name longer than the filesystem
    allows: each a coded issue at its line in the JSON report, never a traceback; a truncated
    Parquet manifest: MANIFEST_UNREADABLE."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    img = save_image(tmp_path / "a.png")
    rows = [
        {"category": "c", "label": "good"},
        {"image": "a\u0000b.png", "category": "c"},
        {"image": "x" * 300 + ".png", "category": "c"},
        {"image": str(img), "category": "c"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(
        pa.table({"image": [str(img)] * 20, "category": ["c"] * 20}), tmp_path / "m.parquet"
    )
    data = (tmp_path / "m.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    found = {}
    for name in ("m.jsonl", "cut.parquet"):
        out = tmp_path / f"{name}.report.json"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "defectflow.cli",
                "preflight",
                str(tmp_path / name),
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        found[name] = [
            (i["code"], i["context"].get("line"))
            for i in json.loads(out.read_text())["issues"]
            if i["severity"] == "error"
        ]
    assert ("IMAGE_PATH_MISSING", 1) in found["m.jsonl"]
    assert ("IMAGE_MISSING", 2) in found["m.jsonl"] and ("IMAGE_MISSING", 3) in found["m.jsonl"]
    assert found["cut.parquet"] == [("MANIFEST_UNREADABLE", None)]
    TRIGGERED.update({"IMAGE_PATH_MISSING", "IMAGE_MISSING", "MANIFEST_UNREADABLE"})


def test_an_unusable_config_or_path_still_writes_a_coded_report(tmp_path):
    import subprocess
    import sys

    img = save_image(tmp_path / "a.png")
    (tmp_path / "bad.yaml").write_text("preflight:\n  ignor: [SIZE_MIX]\n")
    said = {}
    for args, code in (
        ([str(img), "--config", str(tmp_path / "bad.yaml")], "CONFIG_INVALID"),
        ([str(tmp_path / "nowhere")], "MANIFEST_UNREADABLE"),
    ):
        out = tmp_path / f"{code}.json"
        r = subprocess.run(
            [sys.executable, "-m", "defectflow.cli", "preflight", *args, "--json", str(out)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        (issue,) = json.loads(out.read_text())["issues"]
        assert issue["code"] == code, issue
        said[code] = issue["message"]
        TRIGGERED.add(code)
    assert str(tmp_path / "bad.yaml") in said["CONFIG_INVALID"]
    assert "preflight.ignor: unknown key; did you mean `ignore`?" in said["CONFIG_INVALID"]
    assert "nowhere does not exist" in said["MANIFEST_UNREADABLE"]


def test_yolo_label_problems_have_codes(tmp_path):
    """A label file without its image (LABEL_ORPHAN, a warning) and a line that is no YOLO
    object (LABELS_INVALID, an error at its file and line)."""
    import yaml

    from defectflow.data.preflight_report import unreadable_manifest_report
    from defectflow.errors import ManifestError

    root = tmp_path / "y"
    save_image(root / "images/train/a.png")
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["dent"]}))
    src = DatasetConfig.model_validate({"sources": [{"type": "yolo", "path": str(root)}]}).sources
    by = _by_code(_run(ingest_sources(src, "t", mask_dir=tmp_path / "m")))
    assert [i.context["path"] for i in by["LABEL_ORPHAN"]] == [
        str(root / "labels/train/orphan.txt")
    ]
    TRIGGERED.add("LABEL_ORPHAN")
    (root / "labels/train/a.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(ManifestError) as exc:
        ingest_sources(src, "t", mask_dir=tmp_path / "m")
    (issue,) = unreadable_manifest_report(exc.value, "t", str(root), PreflightConfig()).issues
    assert issue.code == "LABELS_INVALID" and issue.context["line"] == 1
    assert issue.context["file"] == str(root / "labels/train/a.txt")
    TRIGGERED.add(issue.code)


def test_a_byte_order_mark_and_a_json_array_are_read(tmp_path):
    img = save_image(tmp_path / "a.png")
    row = {"image": str(img), "category": "c", "split": "train"}
    (tmp_path / "bom.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8-sig")
    (tmp_path / "array.json").write_text(json.dumps([row, row], indent=2))
    for name, n in (("bom.jsonl", 1), ("array.json", 2)):
        src = DatasetConfig.model_validate(
            {"sources": [{"type": "manifest", "path": str(tmp_path / name)}]}
        ).sources
        recs = ingest_sources(src, "t")
        assert len(recs) == n and recs[0].image_path == str(img)


@pytest.mark.parametrize("code", sorted(EXPECT_AT_LINE))
def test_record_level_code_points_at_its_manifest_line(zoo, code):
    recs, line = zoo
    found = _by_code(_run(recs)).get(code, [])
    assert found, f"{code} not reported"
    assert line[EXPECT_AT_LINE[code]] in {i.context.get("line") for i in found}, [
        i.context for i in found
    ]
    assert all(i.severity == CODES[code][0] for i in found)
    assert all(i.context.get("file", "").endswith("zoo.jsonl") for i in found)


def test_dataset_level_codes(zoo):
    recs, _ = zoo
    by = _by_code(_run(recs))
    assert {i.context["group_id"] for i in by["GROUP_LEAKAGE"]} == {"part-1"}
    assert {i.context["category"] for i in by["NO_NORMAL_TRAIN"]} == {"emptycat"}
    assert {i.context["category"] for i in by["FEW_TRAIN_IMAGES"]} == {"smallcat", "notestnormal"}
    assert "smallcat" in {i.context["category"] for i in by["NO_TEST_ANOMALIES"]}
    assert "c" not in {i.context["category"] for i in by["NO_TEST_ANOMALIES"]}
    assert {i.context["category"] for i in by["NO_VAL_IMAGES"]} >= {"c", "smallcat"}
    assert {i.context["category"] for i in by["MASK_ABSENT"]} == {"c", "emptycat", "notestnormal"}
    for code in ("MODE_MIX", "BIT_DEPTH_MIX", "SIZE_MIX"):
        assert [i.context["category"] for i in by[code]] == ["c"], code


def test_memory_projection_from_backbone_shape_and_model_settings(mvtec_tree, tmp_path):
    from defectflow.artifacts.backbone import BackboneCard, write_backbone_card
    from defectflow.data.preflight_report import write_report
    from defectflow.models.memory import run_memory_check

    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "mvtec", "path": str(mvtec_tree)}]}
        ).sources,
        "t",
    )
    write_report(_run([r for r in recs if r.image_path]), tmp_path / "preflight.json")
    card = BackboneCard(
        spec={},
        preprocess={},
        weights_sha256=None,
        onnx_sha256="x",
        patch_shape=[152, 28, 28],
        embedding_dim=472,
        parity=0.0,
        versions={},
    )
    (tmp_path / "base").mkdir()
    (tmp_path / "deep").mkdir()
    write_backbone_card(card, tmp_path / "base/backbone.json")
    deep = card.model_copy(update={"patch_shape": [432, 14, 14]})  # a swept backbone
    write_backbone_card(deep, tmp_path / "deep/backbone.json")
    models = {
        "pc": {"backend": "patchcore", "coreset_ratio": 0.1},
        "pc2": {"backend": "patchcore", "coreset_ratio": 0.5},
        "pd": {"backend": "padim"},
        "pc-deep": {"backend": "patchcore", "backbone_variant": "deep"},
    }
    rep = run_memory_check(
        tmp_path / "preflight.json",
        [tmp_path / "base/backbone.json", tmp_path / "deep/backbone.json"],
        models,
        dataset="t",
        max_memory_mb=30,
        out=tmp_path / "m.json",
        default_backbone="base",
    )
    feats = 12 * 28 * 28 * 152 * 4 / 2**20  # 12 normal training images of float32 patch features
    assert rep.fit_images == {"widget": 12}
    # the coreset holds the candidates in their 128-d random projection; the bank, full features
    assert rep.models["widget"]["pc"]["candidates_mb"] == pytest.approx(feats * 128 / 152, abs=0.1)
    assert rep.models["widget"]["pc2"]["model_mb"] == pytest.approx(0.5 * feats, abs=0.1)
    assert rep.models["widget"]["pc-deep"]["candidates_mb"] == pytest.approx(
        12 * 14 * 14 * 128 * 4 / 2**20, abs=0.1
    )
    assert rep.patch_shapes == {"base": [152, 28, 28], "deep": [432, 14, 14]}
    assert rep.models["widget"]["pd"]["model_mb"] == pytest.approx(
        784 * 152 * 152 * 4 / 2**20, abs=0.1
    )
    TRIGGERED.update(i.code for i in rep.issues)
    assert {(i.code, i.context["model"]) for i in rep.issues if i.code == "MEMORY_HIGH"} == {
        ("MEMORY_HIGH", "pd")
    }


def test_clean_data_passes(mvtec_tree):
    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "mvtec", "path": str(mvtec_tree)}]}
        ).sources,
        "t",
    )
    recs = [r for r in recs if r.image_path]  # drop the orphan mask
    report = _run(recs)
    assert report.ok and report.counts["error"] == 0 and report.counts["warning"] == 0
    s = report.categories["widget"]
    assert s.counts == {"test": {"anomaly": 3, "normal": 3}, "train": {"normal": 12}}
    assert (s.anomalies, s.anomalies_with_mask, s.mask_coverage) == (3, 3, 1.0)


def test_ignore_and_severity_override(zoo):
    recs, _ = zoo
    by = _by_code(_run(recs, ignore=["leakage_exact"], severity={"MASK_ORPHAN": "error"}))
    assert "LEAKAGE_EXACT" not in by
    assert all(i.severity == "error" for i in by["MASK_ORPHAN"])


def test_header_mode_reads_no_pixels_but_still_catches_truncation(zoo):
    recs, line = zoo
    report, facts = preflight_records(recs, PreflightConfig(threads=1, verify="header"), "t", "m")
    assert all(f.dhash is None for f in facts.values() if f.kind == "image")
    by = _by_code(report)
    assert line["truncated"] in {i.context["line"] for i in by["IMAGE_TRUNCATED"]}
    assert "LEAKAGE_NEAR" not in by  # needs decoded pixels


def test_parallel_inspection_matches_serial(zoo):
    recs, _ = zoo
    a, _ = preflight_records(recs, PreflightConfig(threads=1), "t", "m")
    b, _ = preflight_records(recs, PreflightConfig(threads=2), "t", "m")
    assert a.model_dump() == b.model_dump()


def test_run_preflight_fails_with_summary_and_keeps_report(zoo, tmp_path):
    recs, _ = zoo
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(recs, manifest)
    out, copy = tmp_path / "out" / "preflight.json", tmp_path / "log" / "preflight_report.json"
    with pytest.raises(PreflightFailed) as exc:
        run_preflight(
            manifest, out, tmp_path / "facts.parquet", checks={}, dataset="zoo", report_copy=copy
        )
    assert "IMAGE_MISSING" in str(exc.value) and "preflight FAILED" in str(exc.value)
    assert not out.exists(), "nothing downstream may see a report of a failed gate"
    assert not read_report(copy).ok


def test_report_is_schema_valid_json(mvtec_tree, tmp_path):
    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "mvtec", "path": str(mvtec_tree)}]}
        ).sources,
        "t",
    )
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(recs, manifest)
    run_preflight(manifest, tmp_path / "p.json", tmp_path / "f.parquet", checks={}, dataset="t")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["ok"] is True and data["schema_version"] == 1
    assert [i["code"] for i in data["issues"] if i["severity"] == "warning"] == ["MASK_ORPHAN"]


def test_every_code_is_triggered_by_some_fixture():
    """Runs last in this module: each documented code must be produced by a test above."""
    assert set(CODES) - TRIGGERED == set()


# --- the real third-party data -------------------------------------------------------------


def test_battery_weld_issues_a_careful_engineer_wants(battery_weld):
    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "mvtec", "path": str(battery_weld / "welding")}]}
        ).sources,
        "bw",
    )
    report = _run(recs)
    by = _by_code(report)
    assert not report.ok
    assert set(c for c, xs in by.items() if xs[0].severity == "error") == {"LEAKAGE_EXACT"}
    # 7 normal test images are byte-identical copies of training images
    assert len(by["LEAKAGE_EXACT"]) == 7
    assert all("/test/good/" in str(i.context["path"]) for i in by["LEAKAGE_EXACT"])
    assert len(by["DUPLICATE_CONTENT"]) == 1  # 6-+2.png and 6-+3.png in train are identical
    assert len(by["MASK_ORPHAN"]) == 40
    assert "LEAKAGE_NEAR" in by and "SIZE_MIX" in by and "NO_VAL_IMAGES" in by
    assert not any(c.startswith(("IMAGE_", "MASK_SIZE")) for c in by)
    assert report.categories["welding"].modes == ["L"]
    assert report.categories["welding"].mask_coverage == 1.0
