"""``defectflow serve``: the delivered model behind HTTP (FastAPI on uvicorn).

Endpoints: ``POST /v1/predict`` (one image: the body, or a multipart ``file``),
``POST /v1/predict/batch`` (multipart, several images), ``POST /v1/model`` (hot swap),
``GET /v1/model``, ``GET /health``, ``GET /metrics`` (Prometheus). Requests are micro-batched
through the backbone (:class:`~defectflow.deploy.stream.MicroBatcher`); a score does not depend on
the batch. The service reads no image path from a request: images come in the body.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request),
# imported inside create_app so the web stack loads only where a service runs

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectflow.deploy.detector import MAX_PIXELS, ImageRejected, decode
from defectflow.deploy.stream import (
    Job,
    MicroBatcher,
    ModelSlot,
    Served,
    error_record,
    heatmap_png,
    load_verified,
    model_facts,
)
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow.serve")

#: bytes a request body may hold unless ``--max-bytes`` says otherwise
MAX_BYTES = 32 * 1024 * 1024
MAX_BATCH_FILES = 64


@dataclass
class ServeOptions:
    infer_config: Path
    threads: int = 2
    runtime: str = "onnxruntime"
    max_batch: int = 8
    max_wait_ms: float = 0.0
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    alarm_window: int = 500
    expect_defect_rate: float = 0.0
    token: str | None = None


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self, slot: ModelSlot) -> None:
        # lazy: prometheus_client only where a service runs
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # no *_created series: counters and histograms only

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "defectflow_requests",
            "requests answered, by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "defectflow_request_seconds",
            "time from request to answer, by endpoint",
            ["endpoint"],
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.images = Counter(
            "defectflow_images", "images scored, by predicted label", ["label"], registry=r
        )
        self.batch = Histogram(
            "defectflow_batch_images",
            "images scored together in one backbone call",
            registry=r,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
        )
        self.swaps = Counter(
            "defectflow_model_swaps", "model swaps, by outcome", ["outcome"], registry=r
        )
        g = {
            "window": "images in the alarm's sliding window",
            "flagged_share": "share of the window's images predicted anomalous",
            "stated_rate": "the model's stated false-alarm rate (expected, as its report states)",
            "stated_high": "the 95% quantile of that rate",
            "allowed_share": "stated rate's 95% quantile + the expected defect rate",
            "p_value": "chance of the window's flags or more on an unchanged line",
            "state": "1 while the alarm sounds (p below 0.001), else 0",
        }
        self.alarm = {k: Gauge(f"defectflow_alarm_{k}", v, registry=r) for k, v in g.items()}
        self.model = Gauge(
            "defectflow_model_info", "the model in service (1)", ["model_id"], registry=r
        )
        self.slot = slot

    def render(self) -> bytes:
        # lazy: prometheus_client only where a service runs
        from prometheus_client import generate_latest

        served = self.slot.current
        if served is not None:
            b = served.alarm.check()
            self.alarm["window"].set(b.scored)
            self.alarm["flagged_share"].set(b.flagged_fraction)
            for k, v in (
                ("stated_rate", b.stated_rate),
                ("stated_high", b.stated_high),
                ("allowed_share", b.allowed_fraction),
                ("p_value", b.p_value),
            ):
                self.alarm[k].set(float("nan") if v is None else v)
            self.alarm["state"].set(1 if b.alarm else 0)
            self.model.clear()
            self.model.labels(served.model_id).set(1)
        return generate_latest(self.registry)


class Service:
    """The state behind the app: the model slot, the scorer thread and the metrics."""

    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.slot = ModelSlot()
        self.metrics = Metrics(self.slot)
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self._counter = 0
        self._counter_lock = threading.Lock()

    # -- model ----------------------------------------------------------------------------
    def load(self, infer_config: Path) -> Served:
        o = self.opts
        return load_verified(
            infer_config,
            threads=o.threads,
            runtime=o.runtime,
            alarm_window=o.alarm_window,
            expect_defect_rate=o.expect_defect_rate,
        )

    def swap(self, infer_config: Path) -> tuple[Served, Served | None]:
        """Load and verify ``infer_config`` beside the model in service, then put it in; on any
        failure the old model keeps serving and the error is raised."""
        with self.slot.swapping:
            try:
                new = self.load(infer_config)
            except Exception:
                self.metrics.swaps.labels("refused").inc()
                raise
            old = self.slot.put(new)
            self.opts.infer_config = infer_config
            self.metrics.swaps.labels("done").inc()
            log.info("model in service: %s (was %s)", new.model_id, old.model_id if old else "none")
            return new, old

    def start(self) -> None:
        self.batcher = MicroBatcher(
            self.opts.max_batch,
            self.opts.max_wait_ms / 1000,
            on_batch=lambda n, _t: self.metrics.batch.observe(n),
        )

        def first_load() -> None:
            try:
                self.swap(self.opts.infer_config)
            except Exception as exc:  # noqa: BLE001 - /health says why
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.error("cannot serve %s: %s", self.opts.infer_config, exc)

        threading.Thread(target=first_load, name="defectflow-load", daemon=True).start()

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    # -- scoring --------------------------------------------------------------------------
    def next_id(self) -> str:
        with self._counter_lock:
            self._counter += 1
            return f"request-{self._counter}"

    def served(self) -> Served:
        s = self.slot.current
        if s is None:
            raise ApiError(
                503, "NOT_READY", self.load_error or "the model is loading; try again shortly"
            )
        return s

    def accept(self, served: Served, body: bytes, image_id: str, name: str) -> Job:
        """Decode one image (in the caller's thread) into a job for the scorer."""
        img, warn = decode(body, self.opts.max_pixels)
        return Job(served, image_id, name, img, warn)


def _authorized(header: str, token: str) -> bool:
    """The bearer token, compared in constant time."""
    return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def _error(status: int, code: str, message: str):
    # lazy: the web stack only where a service runs
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, "TOO_LARGE", f"body of {int(declared)} bytes; this service takes up to {limit}"
        )
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError(
                413, "TOO_LARGE", f"body over {limit} bytes; this service takes up to {limit}"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette reads a cached body for the form parser
    return body


class Guard:
    """ASGI middleware: the bearer token on ``/v1/`` and ``/metrics``, and each ``/v1/``
    request's outcome (its status code) and latency in the metrics. (A plain ASGI class: the
    ``@app.middleware`` kind costs milliseconds a request.)"""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.svc = app, service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, token = scope["path"], self.svc.opts.token
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope["headers"])
        if (
            token
            and path.startswith(("/v1/", "/metrics"))
            and not _authorized(headers.get(b"authorization", b"").decode("latin-1"), token)
        ):
            reply = _error(401, "UNAUTHORIZED", "send 'Authorization: Bearer <token>'")
            await reply(scope, receive, send_status)
        else:
            await self.app(scope, receive, send_status)
        if path.startswith("/v1/"):
            outcome = "ok" if status[0] < 400 else str(status[0])
            self.svc.metrics.requests.labels(path, outcome).inc()
            self.svc.metrics.latency.labels(path).observe(time.perf_counter() - t0)


def create_app(opts: ServeOptions):  # noqa: C901 - the routes are one unit
    """The FastAPI app of one service (its model loads in the background at startup)."""
    # lazy: the web stack only where a service runs
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, Response

    svc = Service(opts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.start()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.create_task(_reload(svc.opts.infer_config))
            )
        yield
        svc.stop()  # uvicorn has answered every accepted request by now

    app = FastAPI(title="defectflow", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = svc
    app.add_middleware(Guard, service=svc)

    async def _reload(path: Path) -> None:
        try:
            await run_in_threadpool(svc.swap, path)
        except Exception as exc:  # noqa: BLE001 - a refused swap leaves the old model serving
            log.error("SIGHUP: %s refused, the old model keeps serving: %s", path, exc)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.message)

    async def _score(served: Served, body: bytes, image_id: str, name: str, maps: bool) -> dict:
        try:
            job = await run_in_threadpool(svc.accept, served, body, image_id, name)
        except ImageRejected as exc:
            raise ApiError(413 if exc.too_large else 400, "BAD_IMAGE", str(exc)) from None
        rec, nm = await asyncio.wrap_future(svc.batcher.submit(job))  # type: ignore[union-attr]
        svc.metrics.images.labels(rec.pred_label or "none").inc()
        out = rec.to_json()
        if maps and nm is not None:
            out["heatmap_png"] = heatmap_png(nm)
        return out

    def _flag(value: str | None) -> bool:
        return (value or "").lower() in ("1", "true", "yes")

    @app.post("/v1/predict")
    async def predict(request: Request):
        """One image: the request body (any image format), or a multipart ``file``."""
        served = svc.served()
        body = await _body(request, opts.max_bytes)
        name = request.query_params.get("image_id")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1)
            up = form.get("file")
            if up is None or isinstance(up, str):
                raise ApiError(400, "NO_IMAGE", "multipart request without a 'file' part")
            body, name = await up.read(), name or up.filename
        if not body:
            raise ApiError(400, "NO_IMAGE", "empty body: send the image bytes")
        image_id = name or svc.next_id()
        return await _score(
            served,
            body,
            image_id,
            name or "(request body)",
            _flag(request.query_params.get("maps")),
        )

    @app.post("/v1/predict/batch")
    async def predict_batch(request: Request):
        """Several images as multipart parts: one record each, in order (an unreadable image's
        record says why)."""
        served = svc.served()
        await _body(request, opts.max_bytes)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "NOT_MULTIPART", "send the images as multipart/form-data parts")
        form = await request.form(max_files=MAX_BATCH_FILES)
        parts = [(k, v) for k, v in form.multi_items() if not isinstance(v, str)]
        if not parts:
            raise ApiError(400, "NO_IMAGE", "no image part in the request")
        maps = _flag(request.query_params.get("maps"))

        async def one(i: int, up: Any) -> dict:
            data = await up.read()
            name = up.filename or f"part-{i}"
            try:
                return await _score(served, data, name, name, maps)
            except ApiError as exc:
                return error_record(served, name, name, exc.message).to_json()

        return await asyncio.gather(*(one(i, up) for i, (_, up) in enumerate(parts)))

    @app.get("/v1/model")
    async def get_model():
        return model_facts(svc.served())

    @app.post("/v1/model")
    async def put_model(request: Request):
        """``{"infer_config": "PATH"}``: load and verify it beside the model in service, then
        swap; refused (422) with the old model serving when it fails."""
        try:
            payload = await request.json()
            path = Path(payload["infer_config"])
        except Exception:  # noqa: BLE001 - any malformed payload is one clear refusal
            raise ApiError(
                400, "BAD_REQUEST", 'send JSON {"infer_config": "path/to/infer_config.json"}'
            ) from None
        try:
            new, old = await run_in_threadpool(svc.swap, path)
        except (DefectflowError, OSError, ValueError) as exc:
            raise ApiError(
                422, "MODEL_REFUSED", f"{path}: {exc}; the model in service is unchanged"
            ) from None
        return {"model_id": new.model_id, "previous": old.model_id if old else None}

    @app.get("/health")
    async def health():
        s = svc.slot.current
        if s is None:
            return JSONResponse(
                {"status": "failed" if svc.load_error else "loading", "error": svc.load_error},
                status_code=503,
            )
        return {"status": "ok", **model_facts(s)}

    @app.get("/metrics")
    async def metrics():
        # lazy: prometheus_client only where a service runs
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def token_from_env() -> str | None:
    """``DEFECTFLOW_TOKEN``: when set, every ``/v1/`` and ``/metrics`` request needs it."""
    return os.environ.get("DEFECTFLOW_TOKEN") or None


def run(opts: ServeOptions, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT (accepted requests are answered first)."""
    # lazy: the web stack only where a service runs
    import uvicorn

    from defectflow.threads import limit_malloc_arenas, set_threads

    limit_malloc_arenas()  # else resident memory grows with every pool thread that decodes
    set_threads(opts.threads)
    app = create_app(opts)
    log.info(
        "serving %s on http://%s:%d (token %s)",
        opts.infer_config,
        host,
        port,
        "required" if opts.token else "off",
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=30,
    )
