"""The Label Studio roundtrip (``defectflow review push|pull``): a running Label Studio over its
HTTP API, URL and token from the environment (never logged). ``pull`` turns completed
annotations into a corrections file, one more source of the dataset
(``{type: corrections, path: ...}``) whose labels and masks override the originals."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectflow.artifacts.standardized import read_standardized
from defectflow.curation.review_tasks import ReviewError, _sdk_brush
from defectflow.io import atomic_path, write_json_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)


def _is_jwt(token: str) -> bool:
    """A Personal Access Token (Label Studio 1.18+: a JWT refresh token), not a legacy token."""
    parts = token.split(".")
    return len(parts) == 3 and token.startswith("eyJ") and all(parts)


class LabelStudio:
    """Minimal client over urllib: URL and token from the environment, the token never shown.

    Both of Label Studio's token kinds work: a Personal Access Token (the default since 1.18) is
    exchanged at ``/api/token/refresh/`` for a short-lived access token sent as ``Bearer`` (and
    exchanged again when it expires); a legacy token is sent as ``Token``."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or os.environ.get("LABEL_STUDIO_URL") or "").rstrip("/")
        self._token = (token or os.environ.get("LABEL_STUDIO_API_KEY") or "").strip()
        self._access: str | None = None
        if not self.url:
            raise ReviewError(
                "set LABEL_STUDIO_URL to your Label Studio (e.g. http://127.0.0.1:8080)"
            )
        if not self._token:
            raise ReviewError(
                "set LABEL_STUDIO_API_KEY to your Personal Access Token (Label "
                "Studio: Account & Settings > Personal Access Token)"
            )

    @property
    def personal(self) -> bool:
        return _is_jwt(self._token)

    def _refused(self, code: int) -> ReviewError:
        if self.personal:
            why = "the Personal Access Token was refused (revoked, expired, or of another server)"
        else:
            why = (
                "the legacy token was refused: Label Studio 1.18+ turns legacy tokens off by "
                "default; create a Personal Access Token (Account & Settings) and use that"
            )
        return ReviewError(
            f"Label Studio at {self.url}: {why} (HTTP {code}); set "
            "LABEL_STUDIO_API_KEY to a valid token"
        )

    def _refresh(self) -> str:
        """A fresh access token for the Personal Access Token."""
        try:
            got = self._request("POST", "/api/token/refresh/", {"refresh": self._token}, None, 60)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code) from None
        access = got.get("access") if isinstance(got, dict) else None
        if not access:
            raise ReviewError(
                f"Label Studio at {self.url} gave no access token for the Personal "
                "Access Token; is it Label Studio 1.18 or later?"
            )
        self._access = access
        return access

    def _request(self, method: str, path: str, body: Any, auth: str | None, timeout: float) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ReviewError(
                f"Label Studio at {self.url} does not answer ({reason}); start it, "
                "or set LABEL_STUDIO_URL"
            ) from None
        try:
            return json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            start = raw[:200].decode("utf-8", "replace").strip().replace("\n", " ")
            page = (
                " (an HTML page: a login proxy, or another service?)" if b"<" in raw[:200] else ""
            )
            raise ReviewError(
                f"{self.url}{path} answered {start[:80]!r}{page}, not Label Studio's JSON; set "
                "LABEL_STUDIO_URL to Label Studio itself"
            ) from None

    def auth_header(self) -> str:
        if not self.personal:
            return f"Token {self._token}"
        return f"Bearer {self._access or self._refresh()}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        for attempt in (0, 1):
            try:
                return self._request(method, path, body, self.auth_header(), timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.personal and attempt == 0:
                    self._access = None  # the access token expired: exchange the PAT again
                    continue
                if exc.code in (401, 403):
                    raise self._refused(exc.code) from None
                detail = exc.read()[:300].decode(errors="replace")
                raise ReviewError(
                    f"Label Studio at {self.url}: {method} {path.split('?')[0]} failed "
                    f"(HTTP {exc.code}): {detail}"
                ) from None
        raise AssertionError("unreachable")

    def tasks(self, project: int) -> list[dict[str, Any]]:
        out, page = [], 1
        while True:
            got = self.call("GET", f"/api/tasks?project={project}&page={page}&page_size=500")
            items = got.get("tasks", []) if isinstance(got, dict) else got
            out += items
            if len(items) < 500:
                return out
            page += 1


def _review_dir(results: str | Path, dataset: str) -> Path:
    return Path(results) / dataset / "review"


def _ensure_local_storage(ls: LabelStudio, project: int, paths: list[str]) -> None:
    """Label Studio serves `/data/local-files/?d=...` only under a local-files storage of the
    project: connect one at the images' common folder (never synced: no task is made from it)."""
    if not paths:
        return
    root = os.path.commonpath([str(Path(p).resolve().parent) for p in paths])
    have = ls.call("GET", f"/api/storages/localfiles?project={project}") or []
    if any(root.startswith(str(st.get("path", "")).rstrip("/") or "/") for st in have):
        return
    ls.call(
        "POST",
        "/api/storages/localfiles",
        {
            "project": project,
            "path": root,
            "title": "defectflow images",
            "use_blob_urls": False,
            "regex_filter": "^$",
        },
    )


def push(dataset: str, results: str | Path = "results", client: LabelStudio | None = None) -> dict:
    """Create (or update) the dataset's project and import the tasks it does not hold yet."""
    folder = _review_dir(results, dataset)
    tasks_file, config_file = folder / "tasks.json", folder / "labeling_config.xml"
    if not tasks_file.is_file():
        raise ReviewError(f"no review tasks at {tasks_file}; run `snakemake review` first")
    tasks = json.loads(tasks_file.read_text())
    ls = client or LabelStudio()
    state_file = folder / "project.json"
    project = None
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("url") == ls.url:
            with contextlib.suppress(ReviewError):
                project = ls.call("GET", f"/api/projects/{state['id']}")
    body = {"title": f"defectflow {dataset}", "label_config": config_file.read_text()}
    if project is None:
        project = ls.call("POST", "/api/projects", body)
    else:
        project = ls.call("PATCH", f"/api/projects/{project['id']}", body)
    _ensure_local_storage(ls, project["id"], [t["data"]["image_path"] for t in tasks])
    have = {t["data"].get("image_id") for t in ls.tasks(project["id"])}
    new = [t for t in tasks if t["data"]["image_id"] not in have]
    if new:
        ls.call("POST", f"/api/projects/{project['id']}/import", new)
    write_json_atomic(state_file, {"url": ls.url, "id": project["id"], "dataset": dataset})
    return {"project": project["id"], "imported": len(new), "already_there": len(tasks) - len(new)}


def _mask_from(result: list[dict], w: int, h: int) -> np.ndarray | None:
    """The reviewer's brush strokes and boxes as one binary mask at image size."""
    mask = np.zeros((h, w), bool)
    found = False
    for r in result:
        v = r.get("value", {})
        if r.get("type") == "brushlabels" and v.get("format") == "rle":
            W, H = r.get("original_width", w), r.get("original_height", h)
            arr = _sdk_brush().decode_rle(v["rle"]).reshape(H, W, 4)[..., 3] > 0
            if (w, h) == (W, H):
                mask |= arr
                found = True
        elif r.get("type") == "rectanglelabels":
            x0, y0 = int(v["x"] / 100 * w), int(v["y"] / 100 * h)
            x1, y1 = (
                int(np.ceil((v["x"] + v["width"]) / 100 * w)),
                int(np.ceil((v["y"] + v["height"]) / 100 * h)),
            )
            mask[max(0, y0) : y1, max(0, x0) : x1] = True
            found = True
    return mask if found else None


def pull(
    dataset: str,
    out: str | Path,
    results: str | Path = "results",
    client: LabelStudio | None = None,
) -> dict:
    """Export the project and write the completed annotations as a corrections file (JSON Lines:
    image_path, label, mask_path, defect_type), masks beside it in ``<out stem>_masks/``.
    Nothing is written unless every annotated task is one of this dataset's images."""

    folder = _review_dir(results, dataset)
    state_file = folder / "project.json"
    if not state_file.is_file():
        raise ReviewError(
            f"{state_file} is missing: push the tasks first (`defectflow review push`)"
        )
    ls = client or LabelStudio()
    state = json.loads(state_file.read_text())
    exported = ls.call(
        "GET", f"/api/projects/{state['id']}/export?exportType=JSON&download_all_tasks=true"
    )
    rows = {
        r["image_id"]: r
        for r in read_standardized(Path(results) / dataset / "standardized.parquet")
    }
    done, foreign = [], []
    for task in exported:
        anns = [
            a for a in task.get("annotations", []) if not a.get("was_cancelled") and a.get("result")
        ]
        if not anns:
            continue
        d = task.get("data", {})
        if d.get("dataset") != dataset or d.get("image_id") not in rows:
            foreign.append(f"task {task.get('id')} ({d.get('image_id') or d.get('image')})")
            continue
        done.append(
            (task, max(anns, key=lambda a: a.get("updated_at") or a.get("created_at") or ""))
        )
    if foreign:
        raise ReviewError(
            f"the export of project {state['id']} holds {len(foreign)} annotated tasks "
            f"that are not images of dataset {dataset!r} (e.g. {foreign[0]}); is this "
            "another project's export? Nothing was written"
        )
    out = Path(out)
    mask_dir = out.with_name(out.stem + "_masks")
    records = []
    for task, ann in done:
        r = rows[task["data"]["image_id"]]
        verdict = next(
            (x["value"]["choices"][0] for x in ann["result"] if x.get("type") == "choices"), None
        )
        if verdict not in ("normal", "anomaly"):
            continue
        rec = {
            "image_path": r["image_path"],
            "label": verdict,
            "mask_path": None,
            "defect_type": None if verdict == "normal" else (r["defect_type"] or "reviewed"),
            "reviewed_by": ann.get("completed_by"),
            "task": task.get("id"),
        }
        mask = _mask_from(ann["result"], r["width"], r["height"]) if verdict == "anomaly" else None
        if mask is not None:
            path = mask_dir / f"{r['image_id']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
            rec["mask_path"] = str(path.resolve())
        records.append(rec)

    write_jsonl_atomic(out, records)
    return {"corrections": len(records), "annotated_tasks": len(done), "file": str(out)}
