"""Localization as a service: a FastAPI app over one or more maps (``sceneloc serve``).

Endpoints (JSON, errors ``{"error": "<one line>"}`` with a 4xx):

* ``POST /v1/localize`` multipart: ``image`` (PNG/JPEG), optional ``depth`` (16-bit PNG, mm),
  ``intrinsics`` ("fx,fy,cx,cy"), ``map`` (name; default the only one), ``session`` (tracking).
* ``POST /v1/sessions`` (optional JSON ``{"map": NAME}``) -> ``{"session": ID}``; ``DELETE /v1/sessions/ID``.
* ``GET /v1/maps``, ``GET /metrics`` (Prometheus), ``GET /healthz`` (no token).

Load: a request is admitted into a bounded queue or answered 503 with ``Retry-After``; ``workers``
consumers take it from there, each gathering up to ``max_batch`` queued requests for one map and
image size within ``batch_wait_ms`` into one network pass (``service.batching.predict_batch``), then running
their poses on a thread pool of ``workers`` threads. A request that waits longer than ``timeout_s``
gets a 503; a queued request whose client gave up is skipped. Session frames are tracked
(``localize.tracking.Tracker``) one at a time per session.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from sceneloc import __version__
from sceneloc.errors import SceneLocError
from sceneloc.geometry import invert_pose, matrix_to_quaternion
from sceneloc.localize.tracking import TrackedLocalization, Tracker, TrackingConfig
from sceneloc.mapping.scene_map import Localization, Map
from sceneloc.pose.config import PoseConfig, estimator_config
from sceneloc.service.batching import needs_single_pass, predict_batch
from sceneloc.service.request import RequestError, decode_depth, decode_image, image_size, parse_intrinsics_field

TOKEN_ENV = "SCENELOC_TOKEN"


@dataclass(frozen=True)
class ServerConfig:
    """Limits and concurrency of the server (``sceneloc serve`` options of the same names)."""
    workers: int = 1                   # consumers of the queue, and threads running poses
    queue_size: int = 8                # admitted requests not yet taken by a worker; beyond: 503
    max_batch: int = 4                 # requests sharing one network pass
    batch_wait_ms: float = 5.0         # how long a worker waits for a batch to fill
    timeout_s: float = 10.0            # from admission to answer
    max_request_bytes: int = 32 << 20  # the whole multipart body
    max_pixels: int = 16_000_000       # per image, read from its header before decoding
    max_sessions: int = 256            # the least recently used session is dropped beyond this
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("workers", "queue_size", "max_batch", "max_request_bytes", "max_pixels", "max_sessions"):
            if getattr(self, name) < 1:
                raise SceneLocError(f"--{name.replace('_', '-')} must be at least 1")
        if self.timeout_s <= 0 or self.batch_wait_ms < 0:
            raise SceneLocError("--timeout-s must be positive and --batch-wait-ms not negative")


@dataclass
class Job:
    """One admitted localization request on its way through the queue."""
    map_name: str
    image_bytes: bytes
    depth_bytes: bytes | None
    K: np.ndarray | None
    session: SessionState | None
    future: asyncio.Future
    admitted: float = field(default_factory=time.perf_counter)


@dataclass
class SessionState:
    """A tracking session: its map's tracker, and a lock so its frames run one at a time, in order."""
    map_name: str
    tracker: Tracker
    lock: Lock = field(default_factory=Lock)


class Metrics:
    """The Prometheus metrics of one app, in its own registry (several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sceneloc_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("sceneloc_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8))
        self.queue_depth = Gauge("sceneloc_queue_depth", "admitted requests waiting for a worker",
                                 registry=self.registry)
        self.failures = Counter("sceneloc_failures", "localize requests without a pose, by kind", ["kind"],
                                registry=self.registry)
        self.batch_size = Histogram("sceneloc_batch_size", "requests per network pass", registry=self.registry,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16))
        self.frames = Counter("sceneloc_frames", "localized frames by how", ["how"], registry=self.registry)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: ``{"error": message}`` on one line."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def localization_json(res: Localization) -> dict[str, Any]:
    """The response body of a localized frame: ``pose`` camera-to-world (4x4 rows) or null, ``qvec``/``tvec``
    world-to-camera (the pose-file convention), inliers, probability (null when uncalibrated), failure, timings."""
    body: dict[str, Any] = {"pose": None, "qvec": None, "tvec": None, "inliers": int(res.inliers),
                            "probability": None if not np.isfinite(res.probability) else float(res.probability),
                            "failure": res.failure,
                            "timings_ms": {k.removesuffix("_ms"): round(float(v), 3) for k, v in res.timings.items()}}
    if res.pose is not None:
        T_cw = invert_pose(res.pose)
        body.update(pose=np.asarray(res.pose, float).tolist(), qvec=matrix_to_quaternion(T_cw[:3, :3]).tolist(),
                    tvec=T_cw[:3, 3].tolist())
    if isinstance(res, TrackedLocalization):
        body["tracked"] = res.tracked
    return body


class LocalizationService:
    """The maps, the queue, the workers and the sessions behind the HTTP endpoints."""

    def __init__(self, maps: dict[str, Map], config: ServerConfig = ServerConfig(),
                 estimator: PoseConfig | str | None = None, tracking: TrackingConfig = TrackingConfig(),
                 on_result: Callable[[str, np.ndarray, Localization], None] | None = None):
        if not maps:
            raise SceneLocError("no map to serve")
        self.maps, self.config, self.tracking = maps, config, tracking
        self.estimator = estimator_config(estimator)
        self.on_result = on_result   # the live view's hook (service/live_view.py), called on a worker thread
        self.metrics = Metrics()
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.queue: asyncio.Queue[Job] | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.config.queue_size)
        self.pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="sceneloc-worker")
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(self.config.workers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    # ------------------------------------------------------------------------------- requests

    def map_name(self, name: str | None) -> str:
        if name is None or name == "":
            if len(self.maps) != 1:
                raise RequestError(400, f"map: this server has {len(self.maps)} maps, name one "
                                        f"({', '.join(sorted(self.maps))})")
            return next(iter(self.maps))
        if name not in self.maps:
            raise RequestError(404, f"map: unknown map {name[:64]!r} (GET /v1/maps lists them)")
        return name

    def new_session(self, map_name: str | None) -> str:
        name = self.map_name(map_name)
        sid = uuid.uuid4().hex
        self.sessions[sid] = SessionState(name, Tracker(self.maps[name], self.estimator, self.tracking))
        while len(self.sessions) > self.config.max_sessions:
            self.sessions.popitem(last=False)
        return sid

    def session(self, sid: str) -> SessionState:
        state = self.sessions.get(sid)
        if state is None:
            raise RequestError(404, f"session: unknown or expired session {sid[:64]!r}")
        self.sessions.move_to_end(sid)
        return state

    async def localize(self, job: Job) -> Localization:
        """Admit ``job`` (503 when the queue is full) and wait for its result (503 after the timeout)."""
        assert self.queue is not None, "the service is not started"
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.failures.labels("overload").inc()
            raise RequestError(503, "server busy: request queue full, retry later") from None
        self.metrics.queue_depth.set(self.queue.qsize())
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.config.timeout_s)
        except TimeoutError:
            job.future.cancel()   # a worker that has not started it skips it
            self.metrics.failures.labels("timeout").inc()
            raise RequestError(503, f"timed out after {self.config.timeout_s:g} s") from None

    # -------------------------------------------------------------------------------- workers

    async def _next_batch(self) -> list[Job]:
        """The oldest queued job and up to ``max_batch - 1`` more that can share its network pass."""
        assert self.queue is not None
        first = await self.queue.get()
        batch = [first]
        if first.session is None and self.config.max_batch > 1:
            deadline = time.perf_counter() + self.config.batch_wait_ms / 1e3
            while len(batch) < self.config.max_batch:
                try:
                    job = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    if time.perf_counter() >= deadline:
                        break
                    await asyncio.sleep(0.001)
                    continue
                batch.append(job)
        self.metrics.queue_depth.set(self.queue.qsize())
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [job for job in await self._next_batch() if not job.future.done()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.pool, self._run_batch, batch)
            except Exception as e:  # a worker must survive any one request
                results = [e] * len(batch)
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _run_batch(self, batch: list[Job]) -> list[Localization | BaseException]:
        """Decode each job, run the network once for the jobs that can share a pass, then each pose."""
        decoded: list[tuple[np.ndarray, np.ndarray | None] | BaseException] = []
        for job in batch:
            try:
                image = decode_image(job.image_bytes, self.config.max_pixels)
                depth = None if job.depth_bytes is None else decode_depth(job.depth_bytes, image.shape[:2],
                                                                         self.config.max_pixels)
                decoded.append((image, depth))
            except RequestError as e:
                decoded.append(e)
        shared: dict[int, Any] = {}
        if not needs_single_pass(self.estimator):
            groups: dict[tuple, list[int]] = {}
            for i, (job, d) in enumerate(zip(batch, decoded, strict=True)):
                if job.session is None and not isinstance(d, BaseException):
                    groups.setdefault((job.map_name, d[0].shape), []).append(i)
            for (name, _), idx in groups.items():
                self.metrics.batch_size.observe(len(idx))
                preds = predict_batch(self.maps[name], [decoded[i][0] for i in idx])  # type: ignore[index]
                shared.update(zip(idx, preds, strict=True))
        out: list[Localization | BaseException] = []
        for i, (job, d) in enumerate(zip(batch, decoded, strict=True)):
            if isinstance(d, BaseException):
                out.append(d)
                continue
            try:
                out.append(self._pose(job, d[0], d[1], shared.get(i)))
            except SceneLocError as e:
                out.append(RequestError(422, str(e)))
            except Exception as e:  # one request's bug must not fail its batch
                out.append(e)
        return out

    def _pose(self, job: Job, image: np.ndarray, depth: np.ndarray | None, prediction: Any) -> Localization:
        rng = np.random.default_rng(0)
        if job.session is not None:
            with job.session.lock:
                res: Localization = job.session.tracker.track(image, depth, job.K, rng=rng)
            self.metrics.frames.labels("tracked" if res.tracked else "relocalized").inc()   # type: ignore[attr-defined]
        else:
            res = self.maps[job.map_name].localize(image, depth, job.K, self.estimator, rng, prediction=prediction)
            self.metrics.frames.labels("relocalized").inc()
        if res.pose is None:
            self.metrics.failures.labels("no_pose").inc()
        if self.on_result is not None:
            self.on_result(job.map_name, image, res)
        return res


# ------------------------------------------------------------------------------------- the app


async def _form_fields(request: Request, max_bytes: int) -> dict[str, bytes | str]:
    """The multipart fields of a localize request: file parts as bytes, text parts as strings."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise RequestError(415, "expected a multipart/form-data body (fields image, depth, intrinsics, map, session)")
    length = request.headers.get("content-length")
    if length is None:
        raise RequestError(411, "a Content-Length header is required")
    if not length.isdigit() or int(length) > max_bytes:
        raise RequestError(413, f"request body larger than {max_bytes} bytes")
    try:
        form = await request.form(max_files=2, max_fields=8, max_part_size=64 << 10)
    except Exception as e:  # starlette raises several kinds on a malformed body
        raise RequestError(400, f"malformed multipart body ({type(e).__name__})") from None
    fields: dict[str, bytes | str] = {}
    for key, value in form.multi_items():
        if key not in ("image", "depth", "intrinsics", "map", "session"):
            raise RequestError(400, f"unknown field {key[:32]!r}")
        fields[key] = await value.read() if isinstance(value, UploadFile) else value
    await form.close()
    return fields


def create_app(service: LocalizationService, token: str | None) -> FastAPI:
    """The FastAPI app over ``service``; with ``token`` every endpoint but /healthz wants ``Bearer token``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="sceneloc", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    metrics = service.metrics
    known = {"/v1/localize", "/v1/maps", "/v1/sessions", "/healthz", "/metrics"}

    @app.middleware("http")
    async def count(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        endpoint = path if path in known else ("/v1/sessions/ID" if path.startswith("/v1/sessions/") else "other")
        response = await call_next(request)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestError)
    async def request_error(_: Request, e: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(service.config.retry_after_s)} if e.status == 503 else None
        return error_response(e.status, e.message, headers)

    @app.exception_handler(Exception)
    async def internal(_: Request, e: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(e).__name__})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    def authorised(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")

    guarded = [Depends(authorised)]

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "maps": len(service.maps)}

    @app.get("/metrics", dependencies=guarded)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/maps", dependencies=guarded)
    async def maps() -> dict[str, Any]:
        return {"maps": [{"name": name, "image_size": list(m.mapping_image_size),
                          "depth_surface": m.cloud is not None, "image_view": m.view is not None,
                          "calibrated": m.calibration is not None} for name, m in sorted(service.maps.items())]}

    @app.post("/v1/sessions", dependencies=guarded)
    async def new_session(request: Request) -> dict[str, str]:
        name = None
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > 4096:
            raise RequestError(413, "session request body larger than 4096 bytes")
        if int(length) > 0:
            try:
                body = await request.json()
            except Exception:  # any malformed JSON
                raise RequestError(400, "expected a JSON body like {\"map\": \"NAME\"} or none") from None
            if not isinstance(body, dict) or not isinstance(body.get("map", ""), str):
                raise RequestError(400, "expected a JSON body like {\"map\": \"NAME\"} or none")
            name = body.get("map")
        return {"session": service.new_session(name)}

    @app.delete("/v1/sessions/{sid}", dependencies=guarded)
    async def end_session(sid: str) -> dict[str, str]:
        service.session(sid)
        del service.sessions[sid]
        return {"session": sid, "status": "closed"}

    @app.post("/v1/localize", dependencies=guarded)
    async def localize(request: Request) -> dict[str, Any]:
        fields = await _form_fields(request, service.config.max_request_bytes)
        image, depth = fields.get("image"), fields.get("depth")
        if not isinstance(image, bytes):
            raise RequestError(400, "image: missing (a PNG or JPEG file part named 'image')")
        if depth is not None and not isinstance(depth, bytes):
            raise RequestError(400, "depth: must be a file part (16-bit PNG, millimetres)")
        texts = {k: v for k, v in fields.items() if k in ("intrinsics", "map", "session")}
        if any(not isinstance(v, str) for v in texts.values()):
            raise RequestError(400, "intrinsics, map and session are text fields, not files")
        width, height = image_size(image)   # cheap header checks here; decoding on a worker
        if width * height > service.config.max_pixels:
            raise RequestError(413, f"image: {width}x{height} pixels, more than the limit of "
                                    f"{service.config.max_pixels}")
        K = parse_intrinsics_field(str(texts["intrinsics"])) if texts.get("intrinsics") else None
        session = service.session(str(texts["session"])) if texts.get("session") else None
        asked = str(texts["map"]) if texts.get("map") else None
        name = service.map_name(asked) if session is None or asked else session.map_name
        if session is not None and session.map_name != name:
            raise RequestError(400, f"session: belongs to map {session.map_name!r}, not {name!r}")
        job = Job(name, image, depth, K, session, asyncio.get_running_loop().create_future())
        res = await service.localize(job)
        body = localization_json(res)
        body["timings_ms"]["server"] = round((time.perf_counter() - job.admitted) * 1e3, 3)
        body["map"] = name
        return body

    return app
