import pytest

from defectflow.io import (
    atomic_path,
    read_jsonl,
    sha256_file,
    write_json_atomic,
    write_jsonl_atomic,
)


def test_atomic_write_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind
    assert (
        target.stat().st_mode & 0o044 == 0o044
    )  # readable by others, like a normal file (umask 022)


def test_jsonl_round_trip_and_hash(tmp_path):
    p = tmp_path / "x.jsonl"
    assert write_jsonl_atomic(p, [{"b": 1, "a": "é"}, {"c": None}]) == 2
    assert list(read_jsonl(p)) == [(1, {"a": "é", "b": 1}), (2, {"c": None})]
    import hashlib

    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_killed_write_leaves_no_temporary_after_the_next_one(tmp_path):
    """kill -9 skips cleanup: the temporary of the killed write is removed once the target is
    written again; temporaries of other targets are not touched."""
    from defectflow.io import atomic_path

    target = tmp_path / "scores.parquet"
    left = tmp_path / ".scores.parquet.k1ll3d_x.tmp"  # as mkstemp names them
    other = tmp_path / ".scores.parquet.json.abcdefgh.tmp"
    left.write_text("half")
    other.write_text("another target's")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and not left.exists() and other.exists()
