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

from defectflow.artifacts.infer_config import read_infer_config  # noqa: E402
from defectflow.artifacts.learning_curve import LearningCurve, read_learning_curve
from defectflow.artifacts.metrics import Metrics, read_metrics  # noqa: E402
from defectflow.artifacts.predictions import PredictionRecord, read_predictions  # noqa: E402
from defectflow.artifacts.standardized import read_standardized
from defectflow.evaluation.curves import roc_curve  # noqa: E402
from defectflow.io import read_json, write_text_atomic  # noqa: E402
from defectflow.tables import read_parquet

log = logging.getLogger(__name__)

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.best{font-weight:bold;background:#e8f5e9}
img{max-width:100%}.cases{display:flex;flex-wrap:wrap;gap:10px}.cases figure{margin:0;width:560px;font-size:12px}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:220px;font-size:12px}
.muted{color:#777}.warn{color:#b00020;font-weight:bold}h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


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
        if vals:  # outlines: neither class hides the other
            ax.hist(
                vals, bins=bins, histtype="step", lw=2, color=color, label=f"{lab} ({len(vals)})"
            )
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set(
        xlabel="normalized score (threshold 0.5)", ylabel="images", title=f"{category} / {model}"
    )
    ax.legend(fontsize=8)
    return _png(fig)


def _triptych(rec: PredictionRecord, mask_path: str | None, side: int = 180) -> str:
    """Image, ground-truth mask and heatmap side by side, as one PNG data URL."""
    tiles = []
    for path in (rec.image_path, mask_path, rec.map_path):
        if path and Path(path).exists():
            im = Image.open(path).convert("RGB")
            im.thumbnail((side, side))
        else:
            im = Image.new("RGB", (side, side), (235, 235, 235))
        tile = Image.new("RGB", (side, side), (255, 255, 255))
        tile.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        tiles.append(tile)
    strip = Image.new("RGB", (3 * side + 8, side), (255, 255, 255))
    for i, t in enumerate(tiles):
        strip.paste(t, (i * (side + 4), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _cases(
    title: str,
    recs: list[PredictionRecord],
    masks: dict[str, str | None],
    raw_thr: float | None,
    shown: int = 6,
    maps: bool = True,
) -> list[str]:
    """The first ``shown`` cases as pictures (image, mask, heatmap where the model makes maps),
    then every case by image in a table (a model without maps still names its mistakes)."""
    if not recs:
        return [f"<h4>{html.escape(title)}: none</h4>"]
    what = "image, mask, heatmap" if maps else "image, mask (this model makes no anomaly maps)"
    out = [f"<h4>{html.escape(title)} ({len(recs)}): {what}</h4><div class=cases>"]
    for r in recs[:shown]:
        raw = (
            f", raw {r.score:.4g} vs {raw_thr:.4g}"
            if r.score is not None and raw_thr is not None
            else ""
        )
        cap = (
            f"{html.escape(r.image_id)} ({html.escape(r.defect_type or r.gt_label or '')}): "
            f"score {r.normalized_score:.2f} vs threshold 0.50{raw}"
        )
        out.append(
            f"<figure><img src='{_triptych(r, masks.get(r.image_id))}'><figcaption title='{html.escape(r.image_path)}'>"
            f"{cap}</figcaption></figure>"
        )
    out.append("</div>")
    if len(recs) > shown:
        out.append(
            "<details><summary>all of them by image</summary><table><tr><th class=l>image</th>"
            "<th class=l>label</th><th>normalized score</th><th>raw score</th></tr>"
        )
        for r in recs:
            out.append(
                f"<tr><td class=l>{html.escape(r.image_id)}</td><td class=l>{html.escape(r.defect_type or r.gt_label or '')}</td>"
                f"<td>{_fmt(r.normalized_score)}</td><td>{_fmt(r.score)}</td></tr>"
            )
        out.append("</table></details>")
    return out


def leaderboard_plot(rows: list[dict]) -> str | None:
    pts = [r for r in rows if r.get("image_auroc") is not None and r.get("fit_s") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for model in sorted({r["model"] for r in pts}):
        rs = [r for r in pts if r["model"] == model]
        ax.scatter(
            [r["fit_s"] + (r.get("score_s") or 0) for r in rs],
            [r["image_auroc"] for r in rs],
            label=model,
        )
    ax.set(
        xscale="log",
        xlabel="fit + score seconds",
        ylabel="image AUROC",
        title="quality vs time (one point a category)",
    )
    ax.legend(fontsize=8)
    return _png(fig)


def _thr(t) -> str:
    if t is None:
        return "–"
    on = {
        "val": "held-out val images",
        "crossfit": f"out-of-fold training normals, {t.folds} folds",
        "crossfit+val": f"out-of-fold training normals ({t.folds} folds) and val",
    }.get(t.calibration, t.calibration)
    fa = t.false_alarms
    rate = (
        f"; states {_pct(fa.expected)} false alarms on good parts ({_pct(fa.low)}-{_pct(fa.high)})"
        if fa is not None
        else ""
    )
    if t.catch_rate is not None:
        rate += f"; flags {_pct(t.catch_rate.expected)} of synthetic defects"
    return (
        f"raw {t.value:.4g} = 0.50 normalized ({html.escape(t.policy)} on {html.escape(on)}: "
        f"{t.n_normal} normal/{t.n_anomaly} anomalous{rate})"
    )


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def false_alarm_section(metrics: list[Metrics], thresholds: dict) -> list[str]:
    """Stated against realized false-alarm rates on the test normals, one row a model."""
    rows = [m for m in metrics if m.false_alarms is not None]
    if not rows:
        return []
    out = [
        "<h2>False alarms on good parts: stated and realized</h2><table><tr><th class=l>category</th>"
        "<th class=l>model</th><th class=l>policy</th><th>target</th><th>stated (90% interval)</th>"
        "<th>on n normals</th><th>test normals flagged</th><th>allowed (90%)</th>"
        "<th class=l>verdict</th><th class=l>test normals vs calibration normals</th></tr>"
    ]
    notes, meanings = [], {}
    for m in sorted(rows, key=lambda x: (x.category, x.model)):
        fa = m.false_alarms
        t = thresholds.get((m.category, m.model))
        st = fa.stated
        stated = (
            f"{_pct(st.expected)} ({_pct(st.low)}-{_pct(st.high)})"
            if st
            else f"<span class=muted>{html.escape(fa.reason or '')}</span>"
        )
        verdict = html.escape(fa.verdict or fa.status)
        if fa.verdict and fa.verdict != "holds":
            verdict = f"<span class=warn>{verdict}</span>"
        shift = "–"
        if fa.shift is not None:
            sh = fa.shift
            meanings[sh.direction] = sh.meaning
            text = f"{sh.direction} (KS {sh.statistic:.2f}, p={sh.p_value:.2g})"
            shift = f"<span class=warn>{text}</span>" if sh.differs else text
        if st and not st.attainable:
            notes.append(f"{m.category}/{m.model}: {st.note}")
        out.append(
            f"<tr><td class=l>{html.escape(m.category)}</td><td class=l>{html.escape(m.model)}</td>"
            f"<td class=l>{html.escape(t.policy if t else '–')}</td>"
            f"<td>{_pct(st.target) if st else '–'}</td><td>{stated}</td><td>{st.n if st else '–'}</td>"
            f"<td>{fa.false_alarms} of {fa.n_normal} ({_pct(fa.realized)})</td>"
            f"<td>{'-'.join(map(str, fa.allowed)) or '–'}</td><td class=l>{verdict}</td>"
            f"<td class=l>{shift}</td></tr>"
        )
    out.append(
        "</table><p class=muted>The stated rate is what the threshold promises on new good parts "
        "from the same line, from the n out-of-sample normal scores it was set on (out-of-fold "
        "training normals and val normals); the 90% interval is its spread over calibration sets "
        "of that size. <i>allowed</i>: how many of the test normals the statement lets be flagged "
        "(90%). Test normals vs calibration normals: a two-sample Kolmogorov-Smirnov test of their "
        "scores (flagged at p &lt; 0.01).</p>"
    )
    out += [f"<p class=warn>{html.escape(n)}</p>" for n in notes]
    out += [
        f"<p><b>{html.escape(d)}</b>: {html.escape(text)}</p>"
        for d, text in sorted(meanings.items())
        if d != "alike"
    ]
    return out


CATCH_GAP = 0.15  # synthetic estimate vs real recall: further apart, the report says so


def catch_rate_plot(thresholds: dict, category: str) -> str | None:
    """Synthetic catch rate against the false-alarm target, one line a model of the category."""
    lines = {
        m: t.tradeoff
        for (c, m), t in sorted(thresholds.items())
        if c == category and t is not None and t.tradeoff and t.tradeoff[0].catch_rate is not None
    }
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for model, points in lines.items():
        ax.plot(
            [100 * p.expected_false_alarms for p in points],
            [100 * (p.catch_rate or 0) for p in points],
            marker="o",
            label=model,
        )
    ax.set(
        xlabel="false alarms on good parts (expected, %)",
        ylabel="synthetic defects caught (%)",
        title=f"{category}: what each false-alarm target buys",
        ylim=(0, 102),
    )
    ax.legend(fontsize=8)
    return _png(fig)


def catch_rate_section(metrics: list[Metrics], thresholds: dict) -> list[str]:
    """The share of synthetic defects each delivered threshold flags, beside its real recall on
    the labelled test defects, and the trade-off of other false-alarm targets."""
    rows = [
        (m, thresholds[(m.category, m.model)])
        for m in sorted(metrics, key=lambda x: (x.category, x.model))
        if thresholds.get((m.category, m.model)) is not None
        and thresholds[(m.category, m.model)].catch_rate is not None
    ]
    if not rows:
        return []
    out = [
        "<h2>Defects it will catch: synthetic estimate and real recall</h2><table><tr>"
        "<th class=l>category</th><th class=l>model</th><th>false alarms stated</th>"
        "<th>synthetic caught (90%)</th><th>synthetic AUROC</th><th>real recall (test)</th>"
        "<th class=l>estimate vs real</th><th class=l>by family</th></tr>"
    ]
    warn = []
    for m, t in rows:
        cr = t.catch_rate
        real = m.image.recall if m.image.n_anomaly else None
        if real is None:
            verdict = "<span class=muted>no labelled defects to check it on</span>"
        elif abs(real - cr.expected) <= CATCH_GAP:
            verdict = f"within {CATCH_GAP:.2f}"
        else:
            verdict = f"<span class=warn>off by {abs(real - cr.expected):.2f}</span>"
            warn.append(
                f"{m.category}/{m.model}: the synthetic defects "
                f"{'under' if real > cr.expected else 'over'}state the real recall here "
                f"({_pct(cr.expected)} against {_pct(real)}); trust the real recall."
            )
        fams = ", ".join(f"{f} {_pct(v[2])}" for f, v in cr.by_family.items())
        fa = t.false_alarms
        out.append(
            f"<tr><td class=l>{html.escape(m.category)}</td><td class=l>{html.escape(m.model)}</td>"
            f"<td>{_pct(fa.expected) if fa else '–'}</td>"
            f"<td>{_pct(cr.expected)} ({_pct(cr.low)}-{_pct(cr.high)}) of {cr.n}</td>"
            f"<td>{'–' if cr.synthetic_auroc is None else f'{cr.synthetic_auroc:.3f}'}</td>"
            f"<td>{_pct(real)}</td><td class=l>{verdict}</td><td class=l>{html.escape(fams)}</td></tr>"
        )
    out.append(
        "</table><p class=muted>Synthetic defects (cut-and-paste, scratches, stains, texture "
        "blends, blur, missing material) are made from the training good images and each is "
        "scored by the model that never saw its source image. They estimate what share of "
        "defects a threshold catches before any real defect is labelled; how well they stand "
        "for your line's defects is shown where real labels exist.</p>"
    )
    out += [f"<p class=warn>{html.escape(w)}</p>" for w in warn]
    for cat in sorted({m.category for m, _ in rows}):
        png = catch_rate_plot(thresholds, cat)
        if png:
            out.append(f"<img alt='synthetic catch rate against false alarms, {cat}' src='{png}'>")
    return out


def learning_curve_plot(curves: list[LearningCurve]) -> str:
    """One category's curves: held-out normal-score quantile (each model relative to its value
    at the most images) and the AUROC of val defects (where val has some) and of synthetic
    defects (solid and dashed), against training normals."""
    has_val = any(p.val_auroc is not None for c in curves for p in c.points)
    has_syn = any(p.synthetic_auroc is not None for c in curves for p in c.points)
    two = has_val or has_syn
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(9 if two else 4.6, 3.2))
    axes = np.atleast_1d(axes)
    for c in curves:
        n = [p.n_train for p in c.points]
        last = c.points[-1].normal_q95 or 1.0
        line = axes[0].plot(n, [p.normal_q95 / last for p in c.points], marker="o", label=c.model)
        if has_val:
            axes[1].plot(
                n,
                [p.val_auroc for p in c.points],
                marker="o",
                label=f"{c.model} val",
                color=line[0].get_color(),
            )
        if has_syn:
            axes[1].plot(
                n,
                [p.synthetic_auroc for p in c.points],
                marker="s",
                linestyle="--",
                label=f"{c.model} synthetic",
                color=line[0].get_color(),
            )
    axes[0].set_ylabel("held-out normals' 95% score\n(relative to the most images)")
    if two:
        axes[1].set_ylabel("image AUROC (val solid, synthetic dashed)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training normals")
        ax.legend(fontsize=7)
    fig.suptitle(f"{curves[0].category}: how many good images are enough", fontsize=10)
    return _png(fig)


def learning_curve_section(curves: list[LearningCurve]) -> list[str]:
    if not curves:
        return []
    by_cat: dict[str, list[LearningCurve]] = defaultdict(list)
    for c in curves:
        by_cat[c.category].append(c)
    out = [
        "<h2>How many good images are enough</h2><p class=muted>Each model refitted on nested, "
        "seeded subsets of the training normals (stored features, no new embedding) and scored on "
        "held-out normals and on val; no test image is used.</p>"
    ]
    for cat, cs in sorted(by_cat.items()):
        cs = sorted(cs, key=lambda c: c.model)
        out.append(f"<h3>{html.escape(cat)}</h3><img src='{learning_curve_plot(cs)}'><ul>")
        out += [
            f"<li><b>{html.escape(c.model)}</b> ({c.n_available} training normals; held out: "
            f"{c.n_probe} {html.escape(c.probe)}): {html.escape(c.sentence)}</li>"
            for c in cs
        ]
        out.append("</ul>")
    return out


def run_learning_curve_page(dataset: str, curve_files: list[str], out: str | Path) -> None:
    """Snakemake entry point: a dataset's learning curves -> learning_curve.html."""
    curves = [read_learning_curve(f) for f in curve_files]
    body = learning_curve_section(curves) or [
        "<p>No model of this dataset refits on stored features.</p>"
    ]
    write_text_atomic(
        out,
        f"<!doctype html><html><head><meta charset='utf-8'><title>defectflow: {html.escape(dataset)} "
        f"learning curves</title><style>{CSS}</style></head><body>"
        f"<h1>defectflow: {html.escape(dataset)}</h1>" + "".join(body) + "</body></html>",
    )
    for c in curves:
        log.info("%s/%s: %s", c.category, c.model, c.sentence)


def _search(s: dict) -> str:
    """What the nearest-neighbour search behind a model's scores is, in words."""
    if s.get("method") != "ivf":
        return "Scores from exact nearest-neighbour search (every memory bank entry)."
    out = (
        f"Scores from an IVF index ({s.get('lists')} lists, {s.get('probe')} searched per "
        "patch): image scores are exact (certified by re-ranking); a map patch may be "
        "overstated when its nearest entry is in a list not searched"
    )
    if "recall" in s:
        out += (
            f": on {s['queries']} training patches the index found the nearest entry "
            f"{s['recall']:.1%} of the time, overstating by {s['mean_overstatement']:.2%} "
            "on average"
        )
    return html.escape(out + ".")


def build_report(
    dataset: str,
    metrics_files: list[str],
    prediction_files: list[str],
    *,
    preflight: str | None,
    infer_configs: list[str] | None = None,
    memory: str | None = None,
    leaderboard: str | None = None,
    table: str | None = None,
    learning_curves: list[str] | None = None,
) -> str:
    metrics = [read_metrics(f) for f in metrics_files]
    masks: dict[str, str | None] = {}
    if table and Path(table).exists():
        masks = {r["image_id"]: r["mask_path"] for r in read_standardized(table)}
    thresholds, searches = {}, {}
    for f in infer_configs or []:
        ic = read_infer_config(f)
        thresholds[(ic.category, ic.model)] = ic.threshold
        searches[(ic.category, ic.model)] = ic.search
    preds: dict[str, dict[str, list[PredictionRecord]]] = defaultdict(dict)
    for m, f in zip(metrics, prediction_files, strict=True):
        preds[m.category][m.model] = read_predictions(f)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>defectflow: {html.escape(dataset)}</title><style>{CSS}</style></head><body>"
    ]
    parts.append(f"<h1>defectflow report: {html.escape(dataset)}</h1>")
    parts.append(
        "<h2>Metrics</h2><table><tr><th class=l>category</th><th class=l>model</th><th>image AUROC</th><th>AUPR</th><th>F1</th><th>best F1</th>"
        "<th>threshold (policy, scores)</th><th>precision</th><th>recall</th><th>TP/FP/TN/FN</th><th>pixel AUROC</th><th>AUPRO</th><th>errors</th></tr>"
    )
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
        "</table><p class=muted>Scores are normalized so the calibrated threshold is 0.5 (its raw value is in the threshold column). Bold: best image AUROC of the category.</p>"
    )
    parts += false_alarm_section(metrics, thresholds)
    parts += catch_rate_section(metrics, thresholds)
    parts += learning_curve_section([read_learning_curve(f) for f in learning_curves or []])
    if leaderboard and Path(leaderboard).exists():
        rows = read_parquet(leaderboard).to_pylist()
        seeded = any(
            (r.get("n_seeds") or 1) > 1 for r in rows
        )  # the column only where it says something
        parts.append(
            "<h2>Leaderboard</h2><table><tr><th class=l>category</th><th class=l>model</th><th class=l>backbone</th>"
            "<th>image AUROC</th>"
            + ("<th>over seeds</th>" if seeded else "")
            + "<th>F1 / best F1</th><th>pixel AUROC</th><th>fit s</th><th>score s</th>"
            "<th>peak MB</th><th>model MB</th><th class=l>chosen</th></tr>"
        )
        for r in rows:
            marks = [
                m
                for m, on in (
                    ("best on test", r.get("best_on_test")),
                    ("picked without test labels", r.get("picked_without_test_labels")),
                )
                if on
            ]
            seeds = (
                f"{_fmt(r['auroc_mean_over_seeds'])} &plusmn; {_fmt(r['auroc_std_over_seeds'])} (n={int(r['n_seeds'])})"
                if (r.get("n_seeds") or 1) > 1
                else ""
            )
            cls = " class=best" if r.get("best_on_test") else ""
            parts.append(
                f"<tr{cls}><td class=l>{html.escape(r['category'])}</td><td class=l>{html.escape(r['model'])}</td>"
                f"<td class=l>{html.escape(r.get('backbone') or 'own network')}</td>"
                f"<td>{_fmt(r['image_auroc'])}</td>"
                + (f"<td>{seeds}</td>" if seeded else "")
                + f"<td>{_fmt(r['f1'])} / {_fmt(r['best_f1'])}</td><td>{_fmt(r['pixel_auroc'])}</td>"
                f"<td>{_fmt(r['fit_s'])}</td><td>{_fmt(r['score_s'])}</td><td>{_fmt(r['peak_mb'])}</td><td>{_fmt(r['model_mb'])}</td>"
                f"<td class=l>{html.escape(', '.join(marks))}</td></tr>"
            )
        parts.append(
            "</table><p class=muted>Bold: best image AUROC of the category on the test split. "
            "<i>picked without test labels</i>: the variant a choice that never sees test labels makes (F1 on "
            "validation anomalies when there are some, else the tightest cross-fit normal scores); when it "
            "differs from the best on test, choosing without labels costs the difference.</p>"
        )
        lp = leaderboard_plot(rows)
        if lp:
            parts.append(f"<img src='{lp}' alt='quality vs time'>")
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
        ms = {m.model: m for m in by_cat.get(cat, [])}
        types = sorted({t for m in ms.values() for t in m.per_defect_type})
        if types:
            parts.append(
                "<h3>Recall per defect type (at the delivered threshold)</h3><table><tr><th class=l>model</th>"
                + "".join(f"<th>{html.escape(t)}</th>" for t in types)
                + "</tr>"
            )
            for name, m in sorted(ms.items()):
                cells = "".join(
                    f"<td>{_fmt(m.per_defect_type.get(t, {}).get('recall'))} "
                    f"<span class=muted>(n={m.per_defect_type.get(t, {}).get('n', 0)})</span></td>"
                    for t in types
                )
                parts.append(f"<tr><td class=l>{html.escape(name)}</td>{cells}</tr>")
            parts.append("</table>")
        for model_name in sorted(by_model):
            recs = by_model[model_name]
            has_maps = any(r.map_path and Path(r.map_path).exists() for r in recs)
            thr = thresholds.get((cat, model_name))
            raw_thr = thr.value if thr is not None else None
            parts.append(f"<h3>{html.escape(model_name)}: threshold {_thr(thr)}</h3>")
            if searches.get((cat, model_name)):
                parts.append(f"<p class=muted>{_search(searches[(cat, model_name)])}</p>")
            fn = sorted(
                (r for r in recs if r.gt_label == "anomaly" and r.pred_label == "normal"),
                key=lambda r: r.normalized_score or 0,
            )
            fp = sorted(
                (r for r in recs if r.gt_label == "normal" and r.pred_label == "anomaly"),
                key=lambda r: -(r.normalized_score or 0),
            )
            parts += _cases(
                "Missed defects (false negatives), lowest scores first",
                fn,
                masks,
                raw_thr,
                maps=has_maps,
            )
            parts += _cases(
                "False alarms (false positives), highest scores first",
                fp,
                masks,
                raw_thr,
                maps=has_maps,
            )
            if not fn and not fp:
                hits = sorted(
                    (r for r in recs if r.gt_label == "anomaly"),
                    key=lambda r: -(r.normalized_score or 0),
                )[:3]
                parts += _cases(
                    "No misses: the highest-scored defects", hits, masks, raw_thr, maps=has_maps
                )
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
        issues = pf["issues"]
        if issues:
            parts.append(
                "<h3>Problems, with file and line</h3><table><tr><th class=l>severity</th><th class=l>code</th>"
                "<th class=l>where</th><th class=l>message</th></tr>"
            )
            for i in issues[:100]:
                ctx = i.get("context", {})
                where = ctx.get("file") or ctx.get("path") or ""
                if ctx.get("line"):
                    where = f"{where}:{ctx['line']}"
                parts.append(
                    f"<tr><td class=l>{i['severity']}</td><td class=l>{i['code']}</td><td class=l>{html.escape(str(where))}</td>"
                    f"<td class=l>{html.escape(i['message'])}</td></tr>"
                )
            parts.append(
                "</table>"
                + (
                    f"<p class=muted>{len(issues) - 100} more in preflight.json</p>"
                    if len(issues) > 100
                    else ""
                )
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def run_report(
    dataset: str,
    metrics_files: list[str],
    prediction_files: list[str],
    *,
    infer_configs: list[str],
    preflight: str | None,
    out: str | Path,
    memory: str | None = None,
    leaderboard: str | None = None,
    table: str | None = None,
    learning_curves: list[str] | None = None,
) -> None:
    """Snakemake entry point: every metrics.json of a dataset -> report.html."""
    write_text_atomic(
        out,
        build_report(
            dataset,
            list(metrics_files),
            list(prediction_files),
            preflight=preflight,
            infer_configs=list(infer_configs),
            memory=memory,
            leaderboard=leaderboard,
            table=table,
            learning_curves=learning_curves,
        ),
    )
    log.info("report written to %s", out)
