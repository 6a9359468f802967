"""Progress of long loops, to the rule's log / stderr (one line every few seconds)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("defectflow.progress")


class Progress:
    def __init__(self, total: int, desc: str, every: float = 5.0) -> None:
        self.total, self.desc, self.every = total, desc, every
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            log.info("%s: %d/%d (%.1f/s, %.0f s left)", self.desc, self.done, self.total, rate, eta)
            self.last = now
