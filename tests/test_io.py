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


def test_infer_inputs_take_every_image_format_and_say_what_they_leave_out(tmp_path, caplog):
    """A folder gives infer every format a named file may be (GIF too), says which files it
    skipped, and a manifest of another category is refused by name, not as "no images"."""
    from PIL import Image

    from defectflow.deploy.inputs import gather_images
    from defectflow.errors import DefectflowError

    for name in ("a.png", "b.gif", "c.pgm"):
        Image.new("L", (8, 8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    items = gather_images([tmp_path], "cap")
    assert sorted(i["image_id"] for i in items) == ["a.png", "b.gif", "c.pgm"]
    assert "notes.txt" not in str(items) and "not images skipped (.txt)" in caplog.text
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image_path": "a.png", "category": "screw"}\n')
    with pytest.raises(DefectflowError, match="no image of category 'cap'.*screw"):
        gather_images([manifest], "cap")


def test_a_damaged_standardized_table_is_named_with_what_is_wrong(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from defectflow.artifacts.standardized import category_counts
    from defectflow.errors import SchemaValidationError

    garbage = tmp_path / "standardized.parquet"
    garbage.write_text("not a table")
    with pytest.raises(
        SchemaValidationError, match="standardized.parquet is not a readable Parquet"
    ):
        category_counts(garbage)
    pq.write_table(pa.table({"category": ["a", "a", "b"]}), garbage)
    with pytest.raises(
        SchemaValidationError, match=r"column 'image_id' should be string, found nothing"
    ):
        category_counts(garbage)


def test_a_login_page_in_front_of_label_studio_is_named_not_a_traceback():
    """A URL that answers an HTML page (a login proxy) instead of Label Studio's JSON API."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from defectflow.curation.review import LabelStudio
    from defectflow.errors import DefectflowError

    class Login(BaseHTTPRequestHandler):
        def _page(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><html><body>Sign in</body></html>")

        do_GET = do_POST = _page

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ls = LabelStudio(f"http://127.0.0.1:{server.server_port}", "legacy-token")
        with pytest.raises(DefectflowError, match="an HTML page: a login proxy"):
            ls.call("GET", "/api/projects/")
    finally:
        server.shutdown()
