"""The rule files keep their own conventions (a reader of one category reruns only when its rows
change; every job is measured)."""

from __future__ import annotations

import re

from conftest import REPO


def _rules() -> dict[str, str]:
    out = {}
    for f in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=(?:rule|checkpoint) )", f.read_text(), flags=re.M)[1:]:
            out[block.split()[1].rstrip(":")] = block
    return out


def test_every_reader_of_one_category_carries_its_rows_digest():
    """The table is an `ancient` input (category_table, also inside score_inputs and
    model_inputs); without `rows=category_digest` a relabelled image would not rerun the rule."""
    rules = _rules()
    readers = {
        name
        for name, text in rules.items()
        if re.search(r"\b(category_table|score_inputs|model_inputs)\b", text)
    }
    with_digest = {name for name, text in rules.items() if "rows=category_digest" in text}
    assert {"embed", "train", "score", "predict", "metrics", "export_onnx"} <= readers
    assert readers == with_digest, readers ^ with_digest
    assert not any('ancient(PATHS["table"])' in t for t in rules.values()), "use category_table"


def test_every_job_rule_is_measured_and_logged():
    for name, text in _rules().items():
        if "script:" in text or "shell:" in text:
            assert "benchmark:" in text and "log:" in text, name


def test_the_formatters_output_is_accepted():
    """No `# fmt: skip`: the code reads as ruff and snakefmt lay it out (`make lint` checks)."""
    from conftest import REPO

    files = [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]
    for folder in ("src", "scripts", "bench"):
        files += (REPO / folder).rglob("*.py")
    marked = [str(f) for f in files if "fmt: skip" in f.read_text(encoding="utf-8")]
    assert not marked, marked
