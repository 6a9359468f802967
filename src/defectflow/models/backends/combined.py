"""The combined detector: the category's other feature models as one model.

Each member scores the image as it does alone; its score becomes ``-log p``, p its p-value
against the member's own leave-one-out scores of the training good parts
(``backends.pvalues``); the image score is their sum (Fisher's statistic, halved). The members'
arrays and their reference scores live in this model's one checkpoint, so the pipeline and
``defectflow infer`` run the same code on the same bytes: one backbone pass, then each member.

It is fitted from the members' checkpoints and ``crossfit.parquet`` (no features loaded):
:func:`combine`. Its own out-of-sample scores, which its threshold rests on, are each training
image's members' leave-one-out scores turned into p-values against the other training images'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from defectflow.errors import ModelError
from defectflow.models.backends import build
from defectflow.models.backends.base import Backend, Features
from defectflow.models.backends.params import CombinedParams
from defectflow.models.backends.pvalues import fisher, neg_log_pvalues, tail_scale


class CombinedBackend(Backend):
    name = "combined"
    params: CombinedParams

    def __init__(self, params: CombinedParams) -> None:
        super().__init__(params)
        self.members: dict[str, Backend] = {}
        self.refs: dict[str, np.ndarray] = {}  # each member's sorted out-of-sample good scores
        self._meta: dict[str, Any] = {}

    def set_members(self, members: dict[str, tuple[Backend, dict[str, Any], np.ndarray]]) -> None:
        """``name -> (fitted backend, its checkpoint's extra meta, its good parts'
        out-of-sample raw scores)``."""
        if not members:
            raise ModelError("a combined model needs at least one member model")
        self.members = {n: b for n, (b, _, _) in members.items()}
        self._meta = {
            n: {"params": b.params.model_dump(mode="json"), "extra": e}
            for n, (b, e, _) in members.items()
        }
        self.refs = {n: np.sort(np.asarray(r, np.float64)) for n, (_, _, r) in members.items()}
        for n, r in self.refs.items():
            if len(r) < 2:
                raise ModelError(f"combined: member {n!r} has {len(r)} out-of-sample good scores")

    def fit(self, data: Any, seed: int = 0) -> dict[str, Any]:
        """Not fitted on features: see :func:`combine`."""
        raise ModelError("a combined model is made from its members (models.combine), not fitted")

    def member_scores(self, data: Features) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        return {n: b.score(data) for n, b in self.members.items()}

    def combine_scores(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Fisher's statistic of the members' raw scores (by member name)."""
        return fisher([neg_log_pvalues(raw[n], self.refs[n]) for n in self.members])

    def score(self, data: Features) -> tuple[np.ndarray, np.ndarray | None]:
        """The Fisher statistic, and a map: the sum over the members with maps of each pixel's
        ``-log p`` (the pixel taken as that member's score). Where the image's statistic is
        above the map's peak (members without maps, kNN, add to it), the map's positive part is
        scaled so that its peak is the statistic: the map's regions above the threshold show
        where a flagged image's score comes from, and no image-level term lifts every pixel of
        an image (which would blur the pixel metrics)."""
        out = self.member_scores(data)
        score = fisher([neg_log_pvalues(s, self.refs[n]) for n, (s, _) in out.items()])
        with_maps = {n: m for n, (_, m) in out.items() if m is not None}
        if not with_maps:
            return score, None
        maps = sum(
            neg_log_pvalues(np.asarray(m, np.float64).ravel(), self.refs[n]).reshape(m.shape)
            for n, m in with_maps.items()
        )
        peak = maps.reshape(len(maps), -1).max(1)
        lift = np.where(peak > 0, np.maximum(score, peak) / np.maximum(peak, 1e-12), 1.0)
        maps = np.where(maps > 0, maps * lift[:, None, None], maps)
        return score, maps.astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {}
        for n, b in self.members.items():
            state |= {f"member.{n}.{k}": v for k, v in b.state_dict().items()}
            state[f"ref.{n}"] = self.refs[n]
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for n, b in self.members.items():
            prefix = f"member.{n}."
            b.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            self.refs[n] = np.asarray(state[f"ref.{n}"], np.float64)

    def extra_meta(self) -> dict[str, Any]:
        backbone = next(
            (m["extra"].get("backbone") for m in self._meta.values() if m["extra"].get("backbone")),
            None,
        )
        return {"members": self._meta} | ({"backbone": backbone} if backbone else {})

    def set_meta(self, meta: dict[str, Any]) -> None:
        self._meta = meta.get("members", {})
        self.members = {}
        for n, m in self._meta.items():
            b = build(m["params"])
            b.set_meta(m.get("extra", {}))
            self.members[n] = b

    def facts(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "method": "fisher: sum of -log p of each member's score against its leave-one-out "
            "good scores",
            "reference_scores": {n: len(r) for n, r in self.refs.items()},
            "tail_scales": {n: round(tail_scale(r), 6) for n, r in self.refs.items()},
        }
