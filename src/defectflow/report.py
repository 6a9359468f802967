"""A self-contained HTML report per dataset: metrics table, ROC curves, score histograms,
example heatmaps and the preflight summary."""

from __future__ import annotations

import base64
import html
import io
import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from defectflow.artifacts.infer_config import read_infer_config  # noqa: E402
from defectflow.artifacts.metrics import Metrics, read_metrics  # noqa: E402
from defectflow.artifacts.predictions import PredictionRecord, read_predictions  # noqa: E402
from defectflow.io import read_json, write_text_atomic  # noqa: E402

log = logging.getLogger(__name__)

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.best{font-weight:bold;background:#e8f5e9}
img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:220px;font-size:12px}
.muted{color:#777}h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: str, side: int = 220) -> str:
    img = Image.open(path).convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def roc_plot(category: str, preds: dict[str, list[PredictionRecord]]) -> str | None:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    drawn = False
    for model, recs in sorted(preds.items()):
        rs = [r for r in recs if r.score is not None and r.gt_label in ("normal", "anomaly")]
        y = [r.gt_label == "anomaly" for r in rs]
        if len(set(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, [r.score for r in rs])
        ax.plot(fpr, tpr, label=model)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {category}")
    ax.legend(loc="lower right")
    return _png(fig)


def hist_plot(category: str, model: str, recs: list[PredictionRecord]) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    bins = np.linspace(0, 1, 26)
    for lab, color in (("normal", "tab:green"), ("anomaly", "tab:red")):
        vals = [
            r.normalized_score for r in recs if r.gt_label == lab and r.normalized_score is not None
        ]
        if vals:
            ax.hist(vals, bins=bins, alpha=0.6, color=color, label=f"{lab} ({len(vals)})")
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set(
        xlabel="normalized score (threshold 0.5)", ylabel="images", title=f"{category} / {model}"
    )
    ax.legend(fontsize=8)
    return _png(fig)


def _thr(t) -> str:
    if t is None:
        return "–"
    return f"{t.value:.4g} ({html.escape(t.policy)}, {t.n_normal} normal/{t.n_anomaly} anomalous, {t.folds} folds)"


def build_report(dataset: str, metrics_files: list[str], prediction_files: list[str], preflight: str | None,
                 infer_configs: list[str] | None = None, memory: str | None = None) -> str:  # fmt: skip
    metrics = [read_metrics(f) for f in metrics_files]
    thresholds = {}
    for f in infer_configs or []:
        ic = read_infer_config(f)
        thresholds[(ic.category, ic.model)] = ic.threshold
    preds: dict[str, dict[str, list[PredictionRecord]]] = defaultdict(dict)
    for m, f in zip(metrics, prediction_files, strict=True):
        preds[m.category][m.model] = read_predictions(f)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>defectflow: {html.escape(dataset)}</title><style>{CSS}</style></head><body>"
    ]
    parts.append(f"<h1>defectflow report: {html.escape(dataset)}</h1>")
    parts.append("<h2>Metrics</h2><table><tr><th class=l>category</th><th class=l>model</th><th>image AUROC</th><th>AUPR</th><th>F1</th><th>best F1</th>"
                 "<th>threshold (policy, scores)</th><th>precision</th><th>recall</th><th>TP/FP/TN/FN</th><th>pixel AUROC</th><th>AUPRO</th><th>errors</th></tr>")  # fmt: skip
    by_cat: dict[str, list[Metrics]] = defaultdict(list)
    for m in metrics:
        by_cat[m.category].append(m)
    for cat, ms in sorted(by_cat.items()):
        best = max((m.image.auroc or -1) for m in ms)
        for m in sorted(ms, key=lambda x: x.model):
            c = m.image.confusion
            cls = " class=best" if m.image.auroc is not None and m.image.auroc == best else ""
            pix = (
                (_fmt(m.pixel.auroc), _fmt(m.pixel.aupro))
                if m.pixel.status == "ok"
                else (
                    f"<span class=muted title='{html.escape(m.pixel.reason or '')}'>skipped</span>",
                )
                * 2
            )
            parts.append(
                f"<tr{cls}><td class=l>{html.escape(cat)}</td><td class=l>{html.escape(m.model)}</td><td>{_fmt(m.image.auroc)}</td>"
                f"<td>{_fmt(m.image.aupr)}</td><td>{_fmt(m.image.f1)}</td><td>{_fmt(m.image.best_f1)}</td><td>{_thr(thresholds.get((cat, m.model)))}</td><td>{_fmt(m.image.precision)}</td><td>{_fmt(m.image.recall)}</td>"
                f"<td>{c.get('tp', 0)}/{c.get('fp', 0)}/{c.get('tn', 0)}/{c.get('fn', 0)}</td><td>{pix[0]}</td><td>{pix[1]}</td><td>{m.n_errors}</td></tr>"
            )
    parts.append(
        "</table><p class=muted>Scores are normalized so the calibrated threshold is 0.5. Bold: best image AUROC of the category.</p>"
    )
    for cat, by_model in sorted(preds.items()):
        parts.append(f"<h2>{html.escape(cat)}</h2>")
        roc = roc_plot(cat, by_model)
        if roc:
            parts.append(f"<img src='{roc}' alt='ROC {html.escape(cat)}'>")
        parts.append(
            "<div class=grid>"
            + "".join(
                f"<img src='{hist_plot(cat, mdl, recs)}'>" for mdl, recs in sorted(by_model.items())
            )
            + "</div>"
        )
        for best_model in sorted(by_model):
            recs = [r for r in by_model[best_model] if r.map_path and Path(r.map_path).exists()]
            if not recs:
                continue
            worst_fp = sorted(
                (r for r in recs if r.gt_label == "normal"),
                key=lambda r: -(r.normalized_score or 0),
            )[:4]
            top = sorted(
                (r for r in recs if r.gt_label == "anomaly"),
                key=lambda r: -(r.normalized_score or 0),
            )[:8]
            parts.append(
                f"<h3>Anomaly maps ({html.escape(best_model)}): highest-scored defects, then the most suspicious normal images</h3><div class=grid>"
            )
            for r in top + worst_fp:
                cap = f"{html.escape(r.defect_type or r.gt_label or '')}: {r.normalized_score:.2f} ({r.pred_label})"
                parts.append(
                    f"<figure><img src='{_thumb(r.map_path)}'><figcaption>{cap}</figcaption></figure>"
                )  # type: ignore[arg-type]
            parts.append("</div>")
    if preflight and Path(preflight).exists():
        pf = read_json(preflight)
        parts.append(
            "<h2>Preflight</h2><table><tr><th class=l>severity</th><th class=l>code</th><th>count</th></tr>"
        )
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for i in pf["issues"] + (
            read_json(memory)["issues"] if memory and Path(memory).exists() else []
        ):
            counts[(i["severity"], i["code"])] += 1
        for (sev, code), n in sorted(counts.items()):
            parts.append(f"<tr><td class=l>{sev}</td><td class=l>{code}</td><td>{n}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def run_report(
    dataset: str,
    metrics_files: list[str],
    prediction_files: list[str],
    infer_configs: list[str],
    preflight: str | None,
    out: str | Path,
    memory: str | None = None,
) -> None:
    """Snakemake entry point: every metrics.json of a dataset -> report.html."""
    write_text_atomic(
        out,
        build_report(
            dataset, list(metrics_files), list(prediction_files), preflight, list(infer_configs)
        ),
    )
    log.info("report written to %s", out)
