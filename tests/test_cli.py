import json
import subprocess
import sys

from conftest import write_jsonl

from defectflow.cli import main


def test_preflight_clean_folder_exits_0_and_writes_json(mvtec_tree, tmp_path, capsys):
    rc = main(["preflight", str(mvtec_tree), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "widget" in out and "preflight OK" in out
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


def test_preflight_errors_exit_2_and_still_write_json(tmp_path, capsys):
    m = write_jsonl(
        tmp_path / "m.jsonl", [{"image": "missing.png", "category": "c", "split": "train"}]
    )
    rc = main(["preflight", str(m), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 2
    assert "IMAGE_MISSING" in out and "preflight FAILED" in out
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is False


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "defectflow.cli", "preflight", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2  # the summary names the problem (and a --json report would hold it)
    assert "does not exist" in r.stdout + r.stderr and "Traceback" not in r.stderr
    (tmp_path / "m.csv").write_text("picture\nx.png\n")
    r = subprocess.run(
        [sys.executable, "-m", "defectflow.cli", "preflight", str(tmp_path / "m.csv")],
        capture_output=True,
        text=True,
    )
    out = r.stdout + r.stderr  # the summary of the report names the problem
    assert (
        r.returncode == 2
        and "MANIFEST_UNREADABLE" in out
        and "no image path column" in out
        and "Traceback" not in out
    )


def test_validate_reports_ok_and_invalid(tmp_path, mvtec_tree, capsys):
    main(["preflight", str(mvtec_tree), "--json", str(tmp_path / "preflight.json")])
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "preflight.json")]) == 0
    data = json.loads((tmp_path / "preflight.json").read_text())
    data["ok"] = "yes"
    (tmp_path / "bad_preflight.json").write_text(json.dumps(data))
    assert main(["validate", str(tmp_path / "bad_preflight.json")]) == 2
    assert "INVALID" in capsys.readouterr().out


def test_codes_lists_every_code(capsys):
    from defectflow.codes import CODES

    assert main(["codes"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{c}`" in out for c in CODES)


def test_preflight_never_writes_its_report_over_or_into_what_it_reads(mvtec_tree, tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "category": "c", "split": "train"}])
    before = m.read_bytes()
    for target, out in ((m, m), (mvtec_tree, mvtec_tree / "preflight.json")):
        r = subprocess.run(
            [sys.executable, "-m", "defectflow.cli", "preflight", str(target), "--json", str(out)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "the input" in r.stderr and "Traceback" not in r.stderr
    assert m.read_bytes() == before and not (mvtec_tree / "preflight.json").exists()
