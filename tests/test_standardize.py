import pyarrow.parquet as pq
import pytest
from conftest import save_image, write_jsonl

from defectflow.artifacts.standardized import read_standardized
from defectflow.config import DatasetConfig, PreflightConfig, SplitConfig
from defectflow.data.ingest import ingest_sources, write_manifest
from defectflow.data.preflight import preflight_records, run_preflight
from defectflow.data.standardize import run_standardize, standardize_records
from defectflow.errors import PreflightFailed, SchemaValidationError


def _recs(tmp_path, rows):
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    return ingest_sources(
        DatasetConfig.model_validate({"sources": [{"type": "manifest", "path": str(m)}]}).sources,
        "t",
    )


def _mvtec_images(root):
    """Records of the MVTec fixture, without its orphan mask."""
    src = DatasetConfig.model_validate({"sources": [{"type": "mvtec", "path": str(root)}]}).sources
    return [r for r in ingest_sources(src, "t") if r.image_path]


def _std(recs, **split):
    _, facts = preflight_records(recs, PreflightConfig(threads=1), "t", "m")
    return standardize_records(recs, facts, SplitConfig(**split))


def _unsplit(tmp_path, n=100, groups=False):
    rows = []
    for i in range(n):
        row = {
            "image": str(save_image(tmp_path / f"n{i}.png", i)),
            "category": "c",
            "label": "normal",
        }
        if groups:
            row["group_id"] = f"g{i // 4}"
        rows.append(row)
    for i in range(5):
        rows.append(
            {
                "image": str(save_image(tmp_path / f"a{i}.png", 1000 + i)),
                "category": "c",
                "label": "anomaly",
            }
        )
    return rows


def test_split_assignment_is_deterministic_and_follows_fractions(tmp_path):
    recs = _recs(tmp_path, _unsplit(tmp_path))
    a = _std(recs, test_fraction=0.2, val_fraction=0.15, val_from_test=0)
    b = _std(recs, test_fraction=0.2, val_fraction=0.15, val_from_test=0)
    assert a == b
    split = {r["image_id"]: r["split"] for r in a}
    assert all(split[r["image_id"]] == "test" for r in a if r["label"] == "anomaly")
    n_test = sum(r["split"] == "test" and r["label"] == "normal" for r in a)
    n_val = sum(r["split"] == "val" for r in a)
    assert 10 <= n_test <= 30 and 8 <= n_val <= 16
    assert all(r["split_assigned"] for r in a)
    c = _std(recs, test_fraction=0.2, val_fraction=0.15, val_from_test=0, seed=1)
    assert [r["split"] for r in c] != [r["split"] for r in a]


def test_groups_never_straddle_splits(tmp_path):
    rows = _std(
        _recs(tmp_path, _unsplit(tmp_path, groups=True)), test_fraction=0.3, val_fraction=0.2
    )
    by_group = {}
    for r in rows:
        if r["group_id"]:
            by_group.setdefault(r["group_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    assert {s.pop() for s in by_group.values()} == {"train", "val", "test"}


def test_given_splits_are_kept_and_val_is_held_out_of_train(mvtec_tree):
    recs = _mvtec_images(mvtec_tree)
    rows = _std(recs, val_fraction=0.25, val_from_test=0)
    assert sum(r["split"] == "test" for r in rows) == 6
    assert (
        sum(r["split"] == "val" for r in rows) == 3
        and sum(r["split"] == "train" for r in rows) == 9
    )
    assert not any(r["split_assigned"] for r in rows if r["split"] in ("train", "test"))


def test_val_carved_from_test_per_defect_type_and_group(tmp_path):
    """With no val anomaly, `val_from_test` of each test stratum (normals, each defect type) moves
    to val, whole groups, deterministically; every stratum keeps an image in test."""
    rows = []
    for i in range(40):
        rows.append(
            {
                "image": str(save_image(tmp_path / f"n{i}.png", i)),
                "category": "c",
                "label": "normal",
                "split": "train" if i < 20 else "test",
                "group_id": f"p{i // 2}",
            }
        )
    for d, n in (("crack", 10), ("dent", 5), ("hole", 1)):
        for i in range(n):
            rows.append(
                {
                    "image": str(save_image(tmp_path / f"{d}{i}.png", 500 + 37 * len(rows))),
                    "category": "c",
                    "label": "anomaly",
                    "defect_type": d,
                    "split": "test",
                }
            )
    recs = _recs(tmp_path, rows)
    a = _std(recs)  # the default: 0.3
    assert a == _std(recs)
    val = [r for r in a if r["split"] == "val"]
    by = {}
    for r in val:
        by[(r["label"], r["defect_type"])] = by.get((r["label"], r["defect_type"]), 0) + 1
    assert by == {
        ("normal", None): 6,
        ("anomaly", "crack"): 3,
        ("anomaly", "dent"): 2,
    }  # the hole stays
    assert all(r["split_assigned"] for r in val)
    assert sum(r["split"] == "train" for r in a) == 20  # train is untouched
    groups = {}
    for r in a:
        if r["group_id"]:
            groups.setdefault(r["group_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in groups.values())
    assert not any(r["split"] == "val" for r in _std(recs, val_from_test=0))
    other = {r["image_id"] for r in _std(recs, seed=3) if r["split"] == "val"}
    assert other != {r["image_id"] for r in val}
    # a val that already holds an anomaly is kept as given
    rows[-1]["split"] = "val"
    kept = _std(_recs(tmp_path, rows))
    assert [r["image_path"] for r in kept if r["split"] == "val"] == [rows[-1]["image"]]


def test_downgraded_leak_drops_the_test_copy(tmp_path):
    import shutil

    rows = [
        {"image": str(save_image(tmp_path / f"t{i}.png", i)), "category": "c", "split": "train"}
        for i in range(3)
    ]
    shutil.copy(tmp_path / "t0.png", tmp_path / "leak.png")
    rows.append(
        {"image": str(tmp_path / "leak.png"), "category": "c", "split": "test", "label": "normal"}
    )
    rows.append(
        {"image": str(tmp_path / "t1.png"), "category": "c", "split": "train"}
    )  # repeated path
    out = _std(_recs(tmp_path, rows), val_fraction=0)
    assert [r["rel_path"] for r in out] == ["t0.png", "t1.png", "t2.png"]
    assert all(r["label"] == "normal" for r in out)  # unlabeled train images are normal


def test_ids_are_stable_and_unique(mvtec_tree):
    recs = _mvtec_images(mvtec_tree)
    rows = _std(recs)
    ids = [r["image_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert "widget-000-" in ids[0]


def test_parquet_types_are_declared_and_checked_on_read(mvtec_tree, tmp_path):
    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "mvtec", "path": str(mvtec_tree)}]}
        ).sources,
        "t",
    )
    m = tmp_path / "manifest.jsonl"
    write_manifest(recs, m)
    run_preflight(m, tmp_path / "p.json", tmp_path / "f.parquet", checks={}, dataset="t")
    out = tmp_path / "standardized.parquet"
    n = run_standardize(m, tmp_path / "p.json", tmp_path / "f.parquet", out, {})
    assert n == 18 and len(read_standardized(out)) == 18
    schema = pq.read_schema(out)
    assert str(schema.field("mask_fraction").type) == "double"  # null for normals, never inferred
    assert str(schema.field("source_line").type) == "int64"
    table = pq.read_table(out).drop_columns(["sha256"])
    pq.write_table(table, out)
    with pytest.raises(SchemaValidationError, match="sha256"):
        read_standardized(out)


def test_refuses_a_failed_preflight(tmp_path, mvtec_tree):
    from defectflow.data.preflight_report import PreflightReport, write_report

    report = PreflightReport(
        dataset="t",
        manifest="m",
        verify="full",
        ok=False,
        counts={"error": 1, "warning": 0, "info": 0},
        n_records=0,
        n_images=0,
        categories={},
        issues=[],
        ignored_codes=[],
    )
    write_report(report, tmp_path / "p.json")
    with pytest.raises(PreflightFailed):
        run_standardize(
            tmp_path / "m.jsonl",
            tmp_path / "p.json",
            tmp_path / "f.parquet",
            tmp_path / "s.parquet",
            {},
        )


def test_shards_cover_every_image_once_and_depend_only_on_their_count():
    from defectflow.sharding import n_shards, shard_rows

    rows = [{"image_id": str(i)} for i in range(10)]
    assert n_shards(10, 4) == 3 and n_shards(0, 4) == 1 and n_shards(10, 10) == 1
    ids = [r["image_id"] for k in range(3) for r in shard_rows(rows, k, 3)]
    assert ids == [r["image_id"] for r in rows]
    # shard files are named by (index, count) and their content depends on nothing else, so two
    # shard sizes that give the same count (3 and 4 for 9 images) plan the very same files
    assert n_shards(9, 3) == n_shards(9, 4) == 3
    assert [len(shard_rows(rows[:9], k, 3)) for k in range(3)] == [3, 3, 3]
    assert [len(shard_rows(rows, k, 3)) for k in range(3)] == [4, 4, 2]
