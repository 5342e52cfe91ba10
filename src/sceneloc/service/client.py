"""A client of ``sceneloc serve``: ``Client(url, token).localize(image, depth=None, intrinsics=None, session=None)``.

Light on purpose: httpx and numpy only (no torch, no sceneloc map code); OpenCV is imported only to
encode numpy images. ``image`` and ``depth`` are encoded file bytes, a path, or arrays (``(H, W, 3)``
uint8 RGB; depth ``(H, W)`` uint16 millimetres or float metres).

>>> c = Client("http://127.0.0.1:8000", token="secret")                # doctest: +SKIP
>>> s = c.new_session()                                                 # doctest: +SKIP
>>> r = c.localize("frame.png", depth="frame.depth.png", session=s)     # doctest: +SKIP
>>> r.pose                                                              # 4x4 camera-to-world or None
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np


class ServerError(Exception):
    """The server refused or failed a request: its HTTP ``status`` and one-line ``message``."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.retry_after_s = status, message, retry_after_s


@dataclass
class RemoteLocalization:
    """A server's answer: camera-to-world ``pose (4, 4)`` or None, world-to-camera ``qvec (4,)`` / ``tvec (3,)``,
    inlier count, calibrated probability (None when unknown), failure reason, timings (ms) and, in a
    session, whether the frame was ``tracked`` from the previous pose."""
    pose: np.ndarray | None
    qvec: np.ndarray | None
    tvec: np.ndarray | None
    inliers: int
    probability: float | None
    failure: str | None
    timings_ms: dict[str, float]
    tracked: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RemoteLocalization:
        def arr(key: str) -> np.ndarray | None:
            return None if body.get(key) is None else np.asarray(body[key], dtype=np.float64)
        return cls(arr("pose"), arr("qvec"), arr("tvec"), int(body.get("inliers", 0)), body.get("probability"),
                   body.get("failure"), dict(body.get("timings_ms", {})), body.get("tracked"), body)


def _encode(data: bytes | str | Path | np.ndarray, depth: bool) -> bytes:
    """File bytes of an image or depth given as bytes, a path or an array (PNG-encoded)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str | Path):
        return Path(data).read_bytes()
    cv2 = importlib.import_module("cv2")   # only when encoding arrays: keeps `import sceneloc.service.client` light
    a = np.asarray(data)
    if depth:
        a = a if a.dtype == np.uint16 else np.round(np.nan_to_num(a) * 1000.0).clip(0, 65535).astype(np.uint16)
    else:
        a = cv2.cvtColor(a.astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise ValueError("could not PNG-encode the array")
    return buf.tobytes()


def _intrinsics_field(intrinsics: Any) -> str:
    """``"fx,fy,cx,cy"`` from a 3x3 K, four numbers, or that string."""
    if isinstance(intrinsics, str):
        return intrinsics
    K = np.asarray(intrinsics, dtype=np.float64)
    values = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]] if K.shape == (3, 3) else list(K.ravel())
    return ",".join(repr(float(v)) for v in values)


class Client:
    """HTTP client of one server. ``http`` replaces the underlying ``httpx.Client`` (e.g. FastAPI's
    in-process ``TestClient``)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0, http: httpx.Client | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http if http is not None else httpx.Client(base_url=url, timeout=timeout_s)
        self.http.headers.update(headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            retry = response.headers.get("retry-after")
            raise ServerError(response.status_code, message, float(retry) if retry else None)
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._json(self.http.get("/healthz"))

    def maps(self) -> list[dict[str, Any]]:
        return self._json(self.http.get("/v1/maps"))["maps"]

    def new_session(self, map: str | None = None) -> str:
        """A tracking session id: frames localized with it start from the previous frame's pose."""
        return self._json(self.http.post("/v1/sessions", json={"map": map} if map else None))["session"]

    def close_session(self, session: str) -> None:
        self._json(self.http.delete(f"/v1/sessions/{session}"))

    def localize(self, image: bytes | str | Path | np.ndarray, depth: bytes | str | Path | np.ndarray | None = None,
                 intrinsics: Any = None, session: str | None = None, map: str | None = None) -> RemoteLocalization:
        """Pose of one frame (``POST /v1/localize``); raises ``ServerError`` on a 4xx/5xx answer."""
        files = {"image": ("image", _encode(image, depth=False))}
        if depth is not None:
            files["depth"] = ("depth", _encode(depth, depth=True))
        data = {k: v for k, v in (("intrinsics", None if intrinsics is None else _intrinsics_field(intrinsics)),
                                  ("session", session), ("map", map)) if v is not None}
        return RemoteLocalization.from_json(self._json(self.http.post("/v1/localize", files=files, data=data)))
