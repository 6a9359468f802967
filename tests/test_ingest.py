import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import save_image, save_mask, write_jsonl

from defectflow.config import DatasetConfig
from defectflow.data.ingest import ingest_sources, read_manifest, run_ingest, write_manifest
from defectflow.errors import ManifestError, SchemaValidationError


def _ingest(*sources):
    return ingest_sources(DatasetConfig.model_validate({"sources": list(sources)}).sources, "t")


def _rows(tmp_path):
    save_image(tmp_path / "img" / "a.png", 1)
    save_image(tmp_path / "img" / "b.png", 2)
    save_mask(tmp_path / "img" / "b_mask.png")
    return [
        {"image": "img/a.png", "object": "cap", "split": "training", "label": "good"},
        {
            "image": "img/b.png",
            "object": "cap",
            "split": "test",
            "label": "defective",
            "mask": "img/b_mask.png",
            "defect": "dent",
            "line_no": 7,
        },
    ]


def _check(records, tmp_path):
    assert [r.category for r in records] == ["cap", "cap"]
    assert [r.split for r in records] == ["train", "test"]
    assert [r.label for r in records] == ["normal", "anomaly"]
    assert records[1].mask_path == str((tmp_path / "img" / "b_mask.png").resolve())
    assert records[1].defect_type == "dent"
    assert records[0].image_path == str((tmp_path / "img" / "a.png").resolve())


def test_jsonl_manifest_with_aliases_keeps_source_line(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", _rows(tmp_path))
    recs = _ingest({"type": "manifest", "path": str(m)})
    _check(recs, tmp_path)
    assert [r.source.line for r in recs] == [1, 2]
    assert recs[1].meta == {"line_no": 7}


def test_csv_manifest(tmp_path):
    rows = _rows(tmp_path)
    with (tmp_path / "m.csv").open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, fieldnames=["image", "object", "split", "label", "mask", "defect", "line_no"]
        )
        w.writeheader()
        w.writerows(rows)
    recs = _ingest({"type": "manifest", "path": str(tmp_path / "m.csv")})
    _check(recs, tmp_path)
    assert [r.source.line for r in recs] == [2, 3]  # the header is line 1


def test_parquet_manifest(tmp_path):
    rows = _rows(tmp_path)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    pq.write_table(
        pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys}), tmp_path / "m.parquet"
    )
    _check(_ingest({"type": "manifest", "path": str(tmp_path / "m.parquet")}), tmp_path)


def test_explicit_field_mapping_and_source_defaults(tmp_path):
    save_image(tmp_path / "x.png", 3)
    m = write_jsonl(tmp_path / "m.jsonl", [{"pic": "x.png", "verdict": "OK"}])
    recs = _ingest(
        {
            "type": "manifest",
            "path": str(m),
            "fields": {"image_path": "pic", "label": "verdict"},
            "category": "c",
            "split": "train",
        }
    )
    assert (recs[0].category, recs[0].label, recs[0].split) == ("c", "normal", "train")


def test_unknown_values_are_kept_for_preflight(tmp_path):
    save_image(tmp_path / "x.png", 3)
    m = write_jsonl(
        tmp_path / "m.jsonl",
        [{"image": "x.png", "category": "c", "label": "maybe", "split": "holdout"}],
    )
    recs = _ingest({"type": "manifest", "path": str(m)})
    assert (recs[0].label, recs[0].split) == ("maybe", "holdout")


def test_manifest_without_image_column_says_what_to_do(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"picture": "x.png"}])
    with pytest.raises(ManifestError, match=r"no image path column.*picture.*fields: \{image_path"):
        _ingest({"type": "manifest", "path": str(m)})


def test_bad_json_line_names_the_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.png"}\n{"image": oops}\n')
    with pytest.raises(ManifestError, match="line 2"):
        _ingest({"type": "manifest", "path": str(m)})


def test_missing_manifest_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        _ingest({"type": "manifest", "path": str(tmp_path / "none.csv")})
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no records"):
        _ingest({"type": "manifest", "path": str(tmp_path / "e.jsonl")})


def test_mvtec_layout(mvtec_tree):
    recs = _ingest({"type": "mvtec", "path": str(mvtec_tree.parent)})
    imgs = [r for r in recs if r.image_path]
    assert len(imgs) == 18 and {r.category for r in imgs} == {"widget"}
    assert sum(r.split == "train" for r in imgs) == 12
    anomalies = [r for r in imgs if r.label == "anomaly"]
    assert len(anomalies) == 3 and all(
        r.mask_path and r.defect_type == "scratch" for r in anomalies
    )
    orphans = [r for r in recs if r.image_path is None]
    assert [o.mask_path.endswith("099_mask.png") for o in orphans] == [True]


def test_folder_layout_has_no_splits(tmp_path):
    root = tmp_path / "cam2"
    for i in range(4):
        save_image(root / "good" / f"g{i}.png", i)
    save_image(root / "dent" / "d0.png", 10)
    save_mask(tmp_path / "masks" / "dent" / "d0.png")
    recs = _ingest({"type": "folder", "path": str(root), "mask_dir": str(tmp_path / "masks")})
    assert {r.category for r in recs} == {"cam2"}
    assert all(r.split is None for r in recs)
    dent = [r for r in recs if r.label == "anomaly"]
    assert dent[0].defect_type == "dent" and dent[0].mask_path


def test_folder_without_normal_folder_is_an_error(tmp_path):
    save_image(tmp_path / "f" / "dent" / "a.png")
    with pytest.raises(ManifestError, match="no folder of normal images"):
        _ingest({"type": "folder", "path": str(tmp_path / "f")})


def test_group_regex(tmp_path):
    save_image(tmp_path / "part7_view1.png", 1)
    save_image(tmp_path / "part7_view2.png", 2)
    m = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"image": "part7_view1.png", "category": "c"},
            {"image": "part7_view2.png", "category": "c"},
        ],
    )
    recs = _ingest({"type": "manifest", "path": str(m), "group_regex": r"^(part\d+)_"})
    assert [r.group_id for r in recs] == ["part7", "part7"]


def test_several_sources_form_one_dataset(mvtec_tree, tmp_path):
    save_image(tmp_path / "extra.png", 50)
    m = write_jsonl(
        tmp_path / "m.jsonl", [{"image": "extra.png", "category": "widget", "split": "train"}]
    )
    recs = _ingest({"type": "mvtec", "path": str(mvtec_tree)}, {"type": "manifest", "path": str(m)})
    assert len([r for r in recs if r.image_path]) == 19
    assert {r.source.type for r in recs} == {"mvtec", "manifest"}


def test_manifest_round_trip_is_validated(tmp_path, mvtec_tree):
    out = tmp_path / "manifest.jsonl"
    n = run_ingest({"sources": [{"type": "mvtec", "path": str(mvtec_tree)}]}, "t", out)
    assert n == 19 and len(read_manifest(out)) == 19
    lines = out.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["split"] = 5
    out.write_text(json.dumps(bad) + "\n")
    with pytest.raises(SchemaValidationError, match="line 1"):
        read_manifest(out)


def test_write_manifest_refuses_invalid_records(tmp_path):
    from defectflow.records import ManifestRecord, SourceRef

    rec = ManifestRecord.model_construct(
        image_path=None, category=None, source=SourceRef(file="x", type="t"), schema_version="one"
    )
    with pytest.warns(UserWarning), pytest.raises(SchemaValidationError):
        write_manifest([rec], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


# --- the real third-party data -------------------------------------------------------------


def test_battery_weld_jsonl_manifests(battery_weld):
    recs = _ingest(
        {"type": "manifest", "path": str(battery_weld / "train_welding.json"), "split": "train"},
        {"type": "manifest", "path": str(battery_weld / "test_welding.json"), "split": "test"},
    )
    assert len(recs) == 165
    assert {r.category for r in recs} == {"welding"}
    assert sum(r.label == "normal" and r.split == "train" for r in recs) == 37
    assert sum(r.label == "normal" and r.split == "test" for r in recs) == 35
    anomalies = [r for r in recs if r.label == "anomaly"]
    assert len(anomalies) == 93 and all(r.split == "test" and r.mask_path for r in anomalies)
    assert {r.defect_type for r in anomalies} == {"defective"}
    assert all(r.defect_type is None for r in recs if r.label == "normal")


def test_battery_weld_folder_layout(battery_weld):
    recs = _ingest({"type": "mvtec", "path": str(battery_weld / "welding")})
    imgs = [r for r in recs if r.image_path]
    assert len(imgs) == 165
    assert sum(r.mask_path is not None for r in imgs) == 93
    assert sum(r.image_path is None for r in recs) == 40  # masks without an image


def test_spreadsheet_exports_are_read_as_meant(tmp_path):
    """A semicolon CSV (a European spreadsheet), paths with spaces around them, a file:// URI
    and Windows separators all name the image; a URL is said to be one."""
    save_image(tmp_path / "img" / "a.png", 1)
    save_image(tmp_path / "img" / "b.png", 2)
    save_image(tmp_path / "img" / "c.png", 3)
    (tmp_path / "m.csv").write_text(
        "image;category;label\n img/a.png ;cap;OK\n"
        f"file://{tmp_path}/img/b.png;cap;NG\nimg\\c.png;cap;OK\nhttps://example.com/d.png;cap;OK\n"
    )
    recs = _ingest({"type": "manifest", "path": str(tmp_path / "m.csv")})
    paths = [r.image_path for r in recs]
    assert paths[:3] == [str((tmp_path / "img" / n).resolve()) for n in ("a.png", "b.png", "c.png")]
    assert [r.label for r in recs] == ["normal", "anomaly", "normal", "normal"]
    from defectflow.data.imagefacts import inspect_file

    assert "a URL" in inspect_file(paths[3], "image", full=False).error
    with pytest.raises(ManifestError, match="a spreadsheet: save it as CSV"):
        (tmp_path / "m.xlsx").write_bytes(b"PK")
        _ingest({"type": "manifest", "path": str(tmp_path / "m.xlsx")})
