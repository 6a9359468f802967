"""What ``serve`` and ``watch`` share: a model in service (hot-swappable), micro-batched scoring
that never changes a score, and the rolling false-alarm check over the running stream.

One scoring path: :meth:`Detector.score_loaded` and :func:`~defectflow.deploy.detector.record`,
as ``defectflow infer`` and the pipeline's predict stage use them, so a record here is the record
those give for the same image and model.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectflow.artifacts.predictions import PredictionRecord
from defectflow.deploy.detector import Detector, record
from defectflow.deploy.maps import jet
from defectflow.errors import ModelError
from defectflow.false_alarms import RollingAlarm

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One loaded, verified model and the alarm over the images it scored."""

    detector: Detector
    source: Path
    alarm: RollingAlarm

    @property
    def model_id(self) -> str:
        return self.detector.cfg.model_id


def load_verified(
    infer_config: str | Path,
    *,
    threads: int,
    runtime: str,
    alarm_window: int,
    expect_defect_rate: float,
) -> Served:
    """Load a model (every file's sha256 checked against ``infer_config.json``) and score a
    plain grey image through it: a finite score, or :class:`ModelError`."""
    det = Detector.load(infer_config, threads=threads, runtime=runtime)
    if det.needs_files:
        raise ModelError(
            f"{det.cfg.backend} reads image files itself: serve and watch run models with an "
            "ONNX backbone (knn, padim, patchcore, combined)"
        )
    probe = Image.new("RGB", (det.out_size, det.out_size), (128, 128, 128))
    ((score, _),) = det.score_loaded(["probe"], [probe])
    if not math.isfinite(score):
        raise ModelError(f"{infer_config}: the model gives a non-finite score ({score})")
    return Served(
        det,
        Path(infer_config),
        RollingAlarm(det.cfg.threshold.false_alarms, alarm_window, expect_defect_rate),
    )


class ModelSlot:
    """The model in service. A swap loads and verifies the new one beside the old; only then is
    it the one new work gets. Work already accepted keeps the model it was accepted with."""

    def __init__(self) -> None:
        self._current: Served | None = None
        self._lock = threading.Lock()
        self.swapping = threading.Lock()  # one swap at a time

    @property
    def current(self) -> Served | None:
        return self._current

    def put(self, served: Served) -> Served | None:
        with self._lock:
            old, self._current = self._current, served
        return old


@dataclass
class Job:
    """One decoded image waiting to be scored with the model it was accepted with."""

    served: Served
    image_id: str
    image_path: str
    image: Image.Image
    warnings: list[str]
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Scores jobs on one thread, up to ``max_batch`` at once, waiting at most ``max_wait_s`` for
    company after the first. The backbone runs over the batch; each image's score is computed on
    its own, so batching changes throughput, never a score."""

    def __init__(
        self,
        max_batch: int = 8,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.on_batch = on_batch
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="defectflow-scorer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        self._q.put(job)
        return job.future

    def close(self) -> None:
        """Finish what was accepted, then stop."""
        self._q.put(None)
        self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while len(jobs) < self.max_batch:
                try:  # what is queued already joins; then wait for company up to the deadline
                    left = deadline - time.perf_counter()
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            t0 = time.perf_counter()
            by_model: dict[int, list[Job]] = {}
            for j in jobs:
                by_model.setdefault(id(j.served), []).append(j)
            for group in by_model.values():
                self._score(group)
            if self.on_batch is not None:
                self.on_batch(len(jobs), time.perf_counter() - t0)

    @staticmethod
    def _score(group: list[Job]) -> None:
        served = group[0].served
        try:
            scored = served.detector.score_loaded(
                [j.image_id for j in group], [j.image for j in group]
            )
        except Exception as exc:  # noqa: BLE001 - the caller answers with the error
            for j in group:
                j.future.set_exception(exc)
            return
        for j, (score, nm) in zip(group, scored, strict=True):
            rec = record(
                served.detector.cfg,
                j.image_id,
                j.image_path,
                score,
                nm,
                j.image.size,
                warnings=j.warnings,
            )
            if rec.pred_label is not None:
                served.alarm.add(rec.pred_label == "anomaly")
            j.future.set_result((rec, nm))


def heatmap_png(norm_map: np.ndarray) -> str:
    """The normalized map in the jet colours (red: above the threshold), PNG, base64."""
    buf = io.BytesIO()
    Image.fromarray(jet(norm_map)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def error_record(served: Served, image_id: str, image_path: str, error: str) -> PredictionRecord:
    """The record of an image that could not be scored (as ``defectflow infer`` writes it)."""
    return record(served.detector.cfg, image_id, image_path, None, None, None, error=error)


def model_facts(served: Served) -> dict[str, Any]:
    cfg = served.detector.cfg
    return {
        "model_id": cfg.model_id,
        "backend": cfg.backend,
        "category": cfg.category,
        "runtime": served.detector.runtime,
        "infer_config": str(served.source),
        "threshold": cfg.threshold.value,
    }
