"""``defectflow watch``: score each image dropped into a folder, once, as soon as it is whole.

An image is taken when its writer closed it (inotify close-write) or its size and mtime have not
changed for ``settle_s``; its record is appended to the output JSONL with one ``write`` and an
fsync, carrying the image's sha256. A restart (even after kill -9) cuts a half-written last line
and skips every image whose sha256 the output already holds: each image is in the output once.
The rolling false-alarm check runs over the stream and is written to ``<out>.summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from defectflow.artifacts.infer_summary import InferSummary, summary_path, write_infer_summary
from defectflow.artifacts.predictions import PredictionRecord
from defectflow.deploy.detector import ImageRejected, decode, record
from defectflow.deploy.stream import Served
from defectflow.errors import DefectflowError
from defectflow.io import sha256_file
from defectflow.manifests import IMAGE_EXTENSIONS

log = logging.getLogger("defectflow.watch")

Sink = Callable[[dict[str, Any]], None]


def repair_and_read(out: Path) -> list[dict[str, Any]]:
    """The records already in ``out``; a last line cut short by a crash is removed first."""
    if not out.exists():
        return []
    data = out.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        log.warning("%s: a half-written last line (%d bytes) removed", out, len(data) - len(keep))
        with open(out, "r+b") as f:
            f.truncate(len(keep))
            f.flush()
            os.fsync(f.fileno())
    rows = []
    for n, line in enumerate(keep.decode("utf-8").splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise DefectflowError(
                f"{out}:{n} is not a JSON record; watch appends to its own predictions file only"
            ) from None
    return rows


def webhook_sink(url: str, timeout: float = 5.0) -> Sink:
    """POST each record as JSON to ``url`` (a failure is logged; the record is in the file)."""
    # lazy: httpx only where a webhook is asked for
    import httpx

    client = httpx.Client(timeout=timeout)

    def send(rec: dict[str, Any]) -> None:
        try:
            client.post(url, json=rec).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("webhook %s: %s", url, exc)

    return send


def mqtt_sink(address: str, topic: str) -> Sink:
    """Publish each record (JSON, QoS 1) to ``topic`` on the broker at ``host[:port]``."""
    # lazy: paho-mqtt only where a broker is asked for
    import paho.mqtt.client as mqtt

    host, _, port = address.partition(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"defectflow-{os.getpid()}")
    try:
        client.connect(host, int(port or 1883))
    except OSError as exc:
        raise DefectflowError(f"--mqtt {address}: cannot connect to the broker: {exc}") from None
    client.loop_start()

    def send(rec: dict[str, Any]) -> None:
        client.publish(topic, json.dumps(rec), qos=1)

    return send


class Watcher:
    """Scores the images of ``folder`` with ``served`` into ``out`` (see the module doc)."""

    def __init__(
        self,
        folder: Path,
        served: Served,
        out: Path,
        *,
        settle_s: float = 0.5,
        recursive: bool = True,
        batch: int = 8,
        sinks: list[Sink] | None = None,
        rescan_s: float = 30.0,
    ) -> None:
        self.folder, self.served, self.out = folder.resolve(), served, out
        self.settle_s, self.recursive, self.batch = settle_s, recursive, batch
        self.sinks = sinks or []
        self.rescan_s = rescan_s
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[Path, tuple[int, int, float]] = {}  # path: size, mtime_ns, since
        self._closed: set[Path] = set()  # writer closed it (inotify close-write)
        self._done_paths: set[Path] = set()
        self._seen: set[str] = set()
        self.scored_total = 0  # records in the output, this run's and the earlier ones'
        self.errors_total = 0
        self._summary_at = 0.0

    # -- files ----------------------------------------------------------------------------
    def _wanted(self, p: Path) -> bool:
        return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")

    def note(self, p: Path, closed: bool = False) -> None:
        """A file event (or a scan) saw ``p``."""
        if not self._wanted(p):
            return
        with self._lock:
            if p in self._done_paths:
                # rewritten in place: look again (its content decides)
                self._done_paths.discard(p)
            self._pending.setdefault(p, (-1, -1, 0.0))
            if closed:
                self._closed.add(p)
        self._wake.set()

    def scan(self) -> None:
        it = self.folder.rglob("*") if self.recursive else self.folder.glob("*")
        for p in it:
            if p.is_file() and p not in self._done_paths:
                self.note(p)

    def _ready(self) -> list[Path]:
        """Pending files whose writer is done: closed, or size and mtime still for settle_s."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for p, (size, mtime, since) in list(self._pending.items()):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    del self._pending[p]
                    self._closed.discard(p)
                    continue
                if (st.st_size, st.st_mtime_ns) != (size, mtime):
                    self._pending[p] = (st.st_size, st.st_mtime_ns, now)
                    if p not in self._closed:
                        continue
                if st.st_size > 0 and (p in self._closed or now - since >= self.settle_s):
                    ready.append(p)
        return sorted(ready)

    # -- scoring --------------------------------------------------------------------------
    def _append(self, recs: list[PredictionRecord]) -> None:
        lines = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in recs)
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def _process(self, paths: list[Path]) -> None:
        det = self.served.detector
        todo: list[tuple[Path, str, Any, list[str]]] = []
        errors: list[PredictionRecord] = []
        for p in paths:
            try:
                sha = sha256_file(p)
            except OSError:
                continue  # gone meanwhile
            with self._lock:
                self._pending.pop(p, None)
                closed = p in self._closed
                self._closed.discard(p)
                self._done_paths.add(p)
            if sha in self._seen:
                log.info("%s: already scored (same content), skipped", p)
                continue
            image_id = p.relative_to(self.folder).as_posix()
            try:
                img, warn = decode(p)
            except ImageRejected as exc:
                young = time.time() - p.stat().st_mtime < 10 * self.settle_s
                if young and not closed:  # perhaps still being written after a pause
                    with self._lock:
                        self._done_paths.discard(p)
                        self._pending[p] = (-1, -1, 0.0)
                    continue
                rec = record(det.cfg, image_id, str(p), None, None, None, error=str(exc))
                rec.image_sha256 = sha
                errors.append(rec)
                self._seen.add(sha)
                continue
            todo.append((p, sha, img, warn))
        recs = list(errors)
        if todo:
            ids = [p.relative_to(self.folder).as_posix() for p, *_ in todo]
            scored = det.score_loaded(ids, [t[2] for t in todo])
            for (p, sha, img, warn), image_id, (score, nm) in zip(todo, ids, scored, strict=True):
                rec = record(det.cfg, image_id, str(p), score, nm, img.size, warnings=warn)
                rec.image_sha256 = sha
                recs.append(rec)
                self.served.alarm.add(rec.pred_label == "anomaly")
                self._seen.add(sha)
        if not recs:
            return
        self._append(recs)
        self.scored_total += len(recs)
        self.errors_total += len(errors)
        for rec in recs:
            row = rec.to_json()
            for sink in self.sinks:
                sink(row)
        self.write_summary(force=False)

    def write_summary(self, force: bool = True) -> None:
        """``<out>.summary.json``: the rolling alarm as it stands (at most once a second)."""
        if not force and time.monotonic() - self._summary_at < 1.0:
            return
        self._summary_at = time.monotonic()
        b = self.served.alarm.check()
        write_infer_summary(
            InferSummary(
                model_id=self.served.model_id,
                predictions=self.out.name,
                n_images=self.scored_total,
                n_errors=self.errors_total,
                n_flagged=b.flagged,
                batch=b,
            ),
            summary_path(self.out),
        )
        if b.alarm:
            log.warning("alarm: %s", b.message)

    # -- running --------------------------------------------------------------------------
    def resume(self) -> int:
        """Read what the output holds (after repairing it): hashes to skip, flags for the alarm."""
        rows = repair_and_read(self.out)
        self.scored_total = len(rows)
        self.errors_total = sum(1 for r in rows if r.get("error"))
        for r in rows:
            if r.get("image_sha256"):
                self._seen.add(r["image_sha256"])
            if r.get("pred_label") and r.get("model_id") == self.served.model_id:
                self.served.alarm.add(r["pred_label"] == "anomaly")
        return len(rows)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Watch until SIGTERM/SIGINT (or ``until()``): files present at start first."""
        # lazy: watchdog only where a folder is watched
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory:
                    return
                path = Path(getattr(event, "dest_path", "") or event.src_path)
                watcher.note(path, closed=event.event_type == "closed")

        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.resume()
        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=self.recursive)
        observer.start()
        try:
            self.scan()
            last_scan = time.monotonic()
            while not self.stop_event.is_set() and not (until and until()):
                self._wake.wait(timeout=min(0.1, self.settle_s / 2))
                self._wake.clear()
                if time.monotonic() - last_scan > self.rescan_s:
                    self.scan()
                    last_scan = time.monotonic()
                ready = self._ready()
                for s in range(0, len(ready), self.batch):
                    if self.stop_event.is_set():
                        break
                    self._process(ready[s : s + self.batch])
        finally:
            observer.stop()
            observer.join()
            self.write_summary(force=True)

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
