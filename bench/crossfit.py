"""PatchCore cross-fit: fold models derived from the delivered memory bank (what defectflow does)
against fold models refitted with their own coreset, on battery weld's training images: how
alike their out-of-fold scores are, and what each costs.

    .venv/bin/python bench/crossfit.py [--folds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import onnx_backbone, weld_rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()

    from defectflow.features.embeddings import extract
    from defectflow.models import backends
    from defectflow.models.backends.base import Features
    from defectflow.models.train import assign_folds, oof_scores

    paths = [r["image_path"] for r in weld_rows() if r["split"] != "test"]
    with tempfile.TemporaryDirectory() as tmp:
        bb, pp = onnx_backbone(Path(tmp))
        p, e = extract(bb, paths, pp, 16)
    fit = Features(paths, p, e)
    params = backends.entry("patchcore").params.model_validate({"backend": "patchcore"})
    full = backends.build(params)
    full.fit(fit)
    fold = assign_folds(fit.ids, [None] * len(fit), args.folds, 0)
    refit, derived = np.zeros(len(fit)), np.zeros(len(fit))
    t_refit = t_derived = 0.0
    for f in range(args.folds):
        held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        t = time.perf_counter()
        b = backends.build(params)
        b.fit(fit.subset(kept))
        refit[held] = oof_scores(b, fit, held)
        t_refit += time.perf_counter() - t
        t = time.perf_counter()
        derived[held] = oof_scores(full.fold_model(kept, fit), fit, held)
        t_derived += time.perf_counter() - t
    print(f"battery weld: {len(fit)} training images, {args.folds} folds, PatchCore defaults")
    print(
        f"correlation of out-of-fold scores, derived vs refitted: {np.corrcoef(refit, derived)[0, 1]:.3f}"
    )
    for q in (0.5, 0.95):
        a, b = np.quantile(derived, q), np.quantile(refit, q)
        print(f"  quantile {q}: derived {a:.2f}, refitted {b:.2f} ({100 * (a / b - 1):+.1f}%)")
    print(
        f"cross-fit time: derived {t_derived:.1f} s, refitted {t_refit:.1f} s ({t_refit / t_derived:.1f}x)"
    )


if __name__ == "__main__":
    main()
