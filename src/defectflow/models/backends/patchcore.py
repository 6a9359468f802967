"""PatchCore (Roth et al., CVPR 2022): a coreset of normal patch features; a patch's anomaly
score is its distance to the nearest memory entry.

The bank is a budget (``max_bank`` entries at most, ``coreset_ratio`` of the candidates below
that), chosen by greedy k-center at any number of images (``coreset.select_bank``). The search
is exact (blocked matrix products) or an inverted-file index (``ivf``) whose image scores are
still exact: a patch's distance from the index is never below the exact one, so re-ranking an
image's largest patch distances exactly until the largest exact one is above every unchecked
estimate certifies the maximum. Only the map's other patches can be overstated.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from defectflow import device
from defectflow.errors import ModelError
from defectflow.models.backends.base import (
    Backend,
    Features,
    augmented_bank,
    flat_patches,
    knn_distances,
    nearest_index,
    nearest_sq_distances,
)
from defectflow.models.backends.params import PatchcoreParams

if TYPE_CHECKING:
    from defectflow.models.backends.ivf import IvfIndex

log = logging.getLogger(__name__)


class PatchcoreBackend(Backend):
    name = "patchcore"
    params: PatchcoreParams

    def __init__(self, params: PatchcoreParams) -> None:
        super().__init__(params)
        self.bank = np.zeros((0, 0), np.float32)
        self.grid = np.zeros(2, np.int64)
        self.source = np.zeros(0, np.int32)  # training row each memory entry comes from
        self.index: IvfIndex | None = None  # None: exact search
        self._bank_aug: np.ndarray | None = None
        self._ivf = None
        self.recall: dict[str, Any] = {}  # the index's recall, measured at fit time

    def fit(self, data: Features, seed: int = 0) -> dict[str, Any]:
        """Candidates are streamed from the stored ``[N, C, H, W]`` features (float16 as stored)
        into their random projection, image chunk by image chunk: the only large arrays are the
        features and the projected candidates of the global greedy, never a flattened float32
        copy of the features."""
        if len(data) == 0:
            raise ModelError("patchcore needs patch features of at least one training image")
        p = self.params
        n, c, h, w = data.patch.shape
        total = n * h * w
        target, _, room = p.sizes(n, [c, h, w])
        if target >= total:
            rows = np.arange(total)
            coverage: dict[str, Any] = {"covering_radius": 0.0}
        else:
            # lazy: training code, which the delivery path never loads
            from defectflow.models.backends.coreset import select_bank

            sel = select_bank(data.patch, target, p.projection_dim, seed, room)
            rows = sel.rows
            coverage = {
                "covering_radius": round(sel.radius, 6),
                "greedy_candidates": sel.global_candidates,
            }
            if sel.image_radius is not None:
                coverage |= {
                    "per_image_radius": round(sel.image_radius, 6),
                    "radius_bound": round(sel.radius_bound, 6),
                }
        hw = h * w
        pos = rows % hw
        self.bank = np.ascontiguousarray(
            data.patch[rows // hw, :, pos // w, pos % w], dtype=np.float32
        )
        self.source = (rows // hw).astype(np.int32)
        self.grid = np.array([h, w])
        self.index = None
        self._bank_aug = self._ivf = None
        self.recall = {}
        if self.search_method(len(self.bank)) == "ivf":
            # lazy: the index (and numba, 0.3 s) only where a model uses one
            from defectflow.models.backends.ivf import IvfIndex, default_lists

            lists = p.ivf_lists or default_lists(len(self.bank))
            self.index = IvfIndex.build(self.bank, lists, seed)
            self.recall = self._measure_recall(data.patch, rows, seed)
        return {
            "candidates": int(total),
            "bank_size": len(self.bank),
            "dim": c,
            "bank_mb": round(self.bank.nbytes / 2**20, 2),
            **coverage,
            "search": self.search_info(),
        }

    def _measure_recall(
        self, patch: np.ndarray, rows: np.ndarray, seed: int, n: int = 2000
    ) -> dict[str, Any]:
        """How often the index finds a training patch's nearest bank entry, on up to ``n``
        training patches that are not in the bank, and by how much it overstates the rest."""
        _, _, h, w = patch.shape
        total = len(patch) * h * w
        pick = np.random.default_rng(seed + 1).choice(total, min(n, total), replace=False)
        pick = np.setdiff1d(pick, rows)
        if len(pick) == 0:
            return {}
        pos = pick % (h * w)
        q = np.ascontiguousarray(patch[pick // (h * w), :, pos // w, pos % w], dtype=np.float32)
        exact = np.sqrt(nearest_sq_distances(q, self.bank, self._aug()))
        found = np.sqrt(self._patch_sq_distances(q))
        over = found / np.maximum(exact, 1e-12) - 1.0
        return {
            "recall": round(float(np.mean(over <= 1e-4)), 4),
            "queries": len(q),
            "mean_overstatement": round(float(over.mean()), 5),
            "p99_overstatement": round(float(np.quantile(over, 0.99)), 5),
        }

    def search_method(self, bank_size: int) -> str:
        """``exact`` or ``ivf``: what ``search`` means for a bank of this size."""
        if self.params.search == "auto":  # on a GPU exact search is fast enough at any size
            if device.current() == "cuda":
                return "exact"
            return "ivf" if bank_size >= self.params.ivf_min_bank else "exact"
        return self.params.search

    def search_info(self) -> dict[str, Any]:
        """How scores are searched (model card, checkpoint, infer_config)."""
        if self.index is None:
            return {"method": "exact"}
        return {
            "method": "ivf",
            "lists": len(self.index.centroids),
            "probe": self.params.ivf_probe,
            "image_scores": "exact (certified by re-ranking)",
            "maps": "approximate",
            **self.recall,
        }

    def extra_meta(self) -> dict[str, Any]:
        return {"search": self.search_info()}

    def set_meta(self, meta: dict[str, Any]) -> None:
        search = meta.get("search", {})
        self.recall = {
            k: search[k]
            for k in ("recall", "queries", "mean_overstatement", "p99_overstatement")
            if k in search
        }

    def _aug(self) -> np.ndarray:
        if self._bank_aug is None:
            self._bank_aug = augmented_bank(self.bank)
        return self._bank_aug

    def _patch_sq_distances(self, q: np.ndarray) -> np.ndarray:
        if self.index is None:
            return nearest_sq_distances(q, self.bank, self._aug())
        if self._ivf is None:
            self._ivf = self.index.prepare(self.bank)
        d2 = self._ivf.sq_distances(q, self.params.ivf_probe)
        lost = np.flatnonzero(~np.isfinite(d2))  # every probed list empty (a fold's bank)
        if len(lost):
            d2[lost] = nearest_sq_distances(q[lost], self.bank, self._aug())
        return d2

    def _certify_maxima(self, q: np.ndarray, d2: np.ndarray, first: int = 8) -> None:
        """Make each image's largest patch distance exact, in place: the index overstates,
        never understates, so once the largest exactly re-ranked distance is at least every
        unchecked estimate, it is the exact maximum."""
        b, hw = d2.shape
        order = np.argsort(-d2, axis=1, kind="stable")
        checked = np.zeros(b, np.int64)
        todo = np.arange(b)
        t = first
        while len(todo):
            upto = np.minimum(checked[todo] + t, hw)
            rows = np.concatenate(
                [
                    todo[i] * hw + order[todo[i], checked[todo[i]] : upto[i]]
                    for i in range(len(todo))
                ]
            )
            flat = d2.reshape(-1)
            flat[rows] = nearest_sq_distances(q[rows], self.bank, self._aug())
            checked[todo] = upto
            best = np.array([flat[i * hw + order[i, : checked[i]]].max() for i in todo])
            rest = np.array(
                [flat[i * hw + order[i, checked[i]]] if checked[i] < hw else -np.inf for i in todo]
            )
            todo = todo[best < rest]
            t *= 2

    def score(self, data: Features) -> tuple[np.ndarray, np.ndarray]:
        b, c, h, w = data.patch.shape
        q = flat_patches(data.patch)
        d2 = self._patch_sq_distances(q).reshape(b, h * w)
        if self.index is not None:
            self._certify_maxima(q, d2)
        d = np.sqrt(d2).astype(np.float64)
        maps = d.reshape(b, h, w)
        # Image score with the re-weighting of the paper (Eq. 7): the most anomalous patch's
        # distance, damped when its nearest memory entry sits in a dense neighbourhood.
        rows = np.arange(b)
        best = d.argmax(1)
        s_star = d[rows, best]
        k = min(self.params.num_neighbors, len(self.bank))
        if k <= 1:
            return s_star, maps
        m_test = q.reshape(b, h * w, c)[rows, best].astype(np.float64)
        m_star = self.bank[nearest_index(m_test, self.bank, self._aug())]
        _, nb = knn_distances(m_star, self.bank, k, self._aug())
        dist_nb = np.linalg.norm(m_test[:, None, :] - self.bank[nb].astype(np.float64), axis=-1)
        e = np.exp(dist_nb - dist_nb.max(1, keepdims=True))
        weight = 1.0 - e[:, 0] / e.sum(1)
        return weight * s_star, maps

    def torch_scorer(self):
        """The scoring in torch ops, for the ONNX export (parity-checked there)."""
        # lazy: torch (seconds to import) only where a network runs or is exported
        import torch

        bank = torch.from_numpy(self.bank)
        k = min(self.params.num_neighbors, len(bank))

        def score(patch, image):
            b, c, h, w = patch.shape
            q = patch.permute(0, 2, 3, 1).reshape(-1, c)
            d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + (bank * bank).sum(1)[None]
            dmin, nn = d2.min(1)
            d = dmin.clamp_min(0).sqrt().reshape(b, h * w)
            rows, best = torch.arange(b), d.argmax(1)
            s_star = d[rows, best]
            if k <= 1:
                return s_star
            m_test = q.reshape(b, h * w, c)[rows, best]
            nb = torch.topk(
                torch.cdist(bank[nn.reshape(b, h * w)[rows, best]], bank), k, largest=False
            ).indices
            dist_nb = (m_test[:, None, :] - bank[nb]).norm(dim=-1)
            return (1 - torch.softmax(dist_nb, 1)[:, 0]) * s_star

        return score

    def loo_scores(
        self,
        data: Features,
        fold: np.ndarray,
        query: Features | None = None,
        query_fold: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Each image scored against the delivered bank without the entries taken from its own
        fold (the image, or its ``group_id``; for ``query`` rows, the fold of the fit image they
        were made from): as a refit's bank would lack them. Exact search over one augmented
        copy of the bank, whose norm row is set to infinity for the fold's entries while its
        images are scored. None on CUDA (its search takes no mask)."""
        if device.current() == "cuda" or len(self.source) != len(self.bank):
            return None
        fold = np.asarray(fold)
        q, qf = (data, fold) if query is None else (query, np.asarray(query_fold))
        masked = PatchcoreBackend(self.params)
        masked.bank, masked.grid, masked.source = self.bank, self.grid, self.source
        aug = masked._bank_aug = augmented_bank(self.bank)
        norms = aug[-1].copy()
        entry_fold = fold[self.source]
        out = np.empty(len(q))
        for f in np.unique(qf):
            own = np.flatnonzero(entry_fold == f)
            if len(own) == len(self.bank):
                return None
            rows = np.flatnonzero(qf == f)
            aug[-1, own] = np.inf
            for s in range(0, len(rows), 32):
                out[rows[s : s + 32]] = masked.score(q.subset(rows[s : s + 32]))[0]
            aug[-1, own] = norms[own]
        return out

    def fold_model(self, keep: np.ndarray, data: Features) -> PatchcoreBackend:
        """The delivered memory bank without the entries taken from held-out images: the
        held-out images' own patches are gone, as in a refit, at no coreset cost (on battery
        weld its out-of-fold scores correlate 0.985 with refits', quantiles within about 1%:
        bench/crossfit.py)."""
        fold = PatchcoreBackend(self.params)
        mask = np.isin(self.source, keep)
        fold.bank, fold.source, fold.grid = (
            np.ascontiguousarray(self.bank[mask]),
            self.source[mask],
            self.grid,
        )
        fold.index = None if self.index is None else self.index.subset(mask)
        return fold

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"bank": self.bank, "grid": self.grid, "source": self.source}
        if self.index is not None:
            state |= {"ivf_centroids": self.index.centroids, "ivf_lists": self.index.lists}
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.bank = np.ascontiguousarray(state["bank"], dtype=np.float32)
        self.grid = state["grid"]
        self.source = state.get("source", np.zeros(0, np.int32))
        self.index = None
        if "ivf_centroids" in state:
            # lazy: the index (and numba, 0.3 s) only where a model uses one
            from defectflow.models.backends.ivf import IvfIndex

            self.index = IvfIndex(
                np.ascontiguousarray(state["ivf_centroids"], np.float32),
                np.asarray(state["ivf_lists"], np.int32),
            )
        self._bank_aug = self._ivf = None
