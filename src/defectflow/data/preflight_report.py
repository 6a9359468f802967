"""The preflight report: its issues (stable code, severity, message, where), per-category counts,
the readable summary, and the report for input that cannot be read at all."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from defectflow import __version__
from defectflow.codes import CODES, default_severity
from defectflow.config import PreflightConfig
from defectflow.contracts import read_json_artifact, write_json_artifact
from defectflow.records import Severity

log = logging.getLogger(__name__)


class Issue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    severity: Severity
    message: str
    context: dict[str, Any] = Field(
        default_factory=dict, description="record index, path, source file and line, category, ..."
    )


class CategorySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    counts: dict[str, dict[str, int]] = Field(
        description="split (or 'unassigned') -> label -> images"
    )
    anomalies: int
    anomalies_with_mask: int
    mask_coverage: float = Field(description="share of anomalous images that have a usable mask")
    sizes: int = Field(description="distinct image sizes")
    modes: list[str]


class PreflightReport(BaseModel):
    """``preflight.json``."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    defectflow_version: str = __version__
    dataset: str
    manifest: str
    verify: str
    ok: bool = Field(description="true when no issue has severity error")
    counts: dict[str, int] = Field(description="severity -> number of issues")
    n_records: int
    n_images: int
    categories: dict[str, CategorySummary]
    issues: list[Issue]
    ignored_codes: list[str]


class Collector:
    def __init__(self, cfg: PreflightConfig) -> None:
        self.cfg = cfg
        self.issues: list[Issue] = []

    def add(self, code: str, message: str, **context: Any) -> None:
        assert code in CODES, code
        if code in self.cfg.ignore:
            return
        sev = self.cfg.severity.get(code, default_severity(code))
        if not message.isprintable():  # a NUL or newline in a path: shown escaped, not raw
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.issues.append(
            Issue(
                code=code,
                severity=sev,
                message=message,
                context={k: v for k, v in context.items() if v is not None},
            )
        )


def format_summary(report: PreflightReport, examples: int = 2) -> str:
    """A readable table: counts per category/split/label, then issues grouped by code."""
    lines = [
        f"preflight of dataset {report.dataset!r}: {report.n_images} images, {report.n_records} records ({report.verify} verify)"
    ]
    lines.append(f"{'category':<20} {'split':<11} {'normal':>7} {'anomaly':>8} {'other':>6}")
    for cat, s in report.categories.items():
        for split, labels in s.counts.items():
            other = sum(v for k, v in labels.items() if k not in ("normal", "anomaly"))
            lines.append(
                f"{cat:<20} {split:<11} {labels.get('normal', 0):>7} {labels.get('anomaly', 0):>8} {other:>6}"
            )
    by_code: dict[str, list[Issue]] = defaultdict(list)
    for x in report.issues:
        by_code[x.code].append(x)
    if by_code:
        lines.append("")
        lines.append(f"{'severity':<8} {'code':<25} {'count':>5}  example")
    for code, xs in by_code.items():
        for j, x in enumerate(xs[:examples]):
            where = x.context.get("file")
            if where and x.context.get("line"):
                where = f"{where}:{x.context['line']}"
            head = f"{x.severity.value:<8} {code:<25} {len(xs):>5}" if j == 0 else " " * 40
            lines.append(
                f"{head}  {x.message}" + (f"  [{where}]" if where and x.context.get("line") else "")
            )
    verdict = "OK" if report.ok else "FAILED"
    lines.append("")
    lines.append(
        f"preflight {verdict}: {report.counts['error']} errors, {report.counts['warning']} warnings, {report.counts['info']} info"
    )
    if not report.ok:
        lines.append(
            "Fix the errors above, or change a code's severity in config `preflight.severity` (see docs/preflight_codes.md)."
        )
    return "\n".join(lines)


def unreadable_manifest_report(
    exc: Exception, dataset: str, manifest: str, cfg: PreflightConfig
) -> PreflightReport:
    """The report when the manifest itself cannot be parsed: one MANIFEST_UNREADABLE issue with
    the file and line, so a CI gate reading the JSON has it too."""
    col = Collector(cfg)
    ctx = {"file": getattr(exc, "file", None) or manifest, "line": getattr(exc, "line", None)}
    code = getattr(exc, "code", "MANIFEST_UNREADABLE")
    col.add(code, str(exc), **{k: v for k, v in ctx.items() if v is not None})
    counts = {s.value: sum(1 for x in col.issues if x.severity == s) for s in Severity}
    return PreflightReport(
        dataset=dataset,
        manifest=manifest,
        verify=cfg.verify,
        ok=counts["error"] == 0,
        counts=counts,
        n_records=0,
        n_images=0,
        categories={},
        issues=col.issues,
        ignored_codes=sorted(cfg.ignore),
    )


def write_report(report: PreflightReport, path: str | Path) -> None:
    write_json_artifact("preflight", report, path)


def read_report(path: str | Path) -> PreflightReport:
    return read_json_artifact("preflight", PreflightReport, path)
