"""Live view in rerun (``--rerun`` of ``serve`` and ``localize``): the map's points, each query image,
the estimated trajectory and, when known, the true one.

rerun-sdk is an optional extra (``pip install 'sceneloc[viewer]'``, ~170 MB): it is imported only when
a live view starts, and its absence is a one-line error. ``target`` is ``"spawn"`` (start a viewer) or
the path of a ``.rrd`` recording to open later with ``rerun FILE.rrd``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.mapping.scene_map import Localization, Map

#: the map's points are thinned to at most this many (a viewer stays responsive)
MAX_MAP_POINTS = 200_000


def import_rerun() -> Any:
    """The rerun module, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module("rerun")
    except ImportError:
        raise SceneLocError("--rerun needs rerun-sdk: pip install 'sceneloc[viewer]'") from None


def map_points(the_map: Map, max_points: int = MAX_MAP_POINTS) -> tuple[np.ndarray, np.ndarray | None]:
    """The map's surface points ``(N, 3)`` and their grey values ``(N,)`` (the scene view) or None (the
    scene surface has no colour), thinned to ``max_points``; empty for a map with neither."""
    if the_map.view is not None:
        points, grey = the_map.view.points, the_map.view.grey
    elif the_map.cloud is not None:
        points, grey = the_map.cloud.points, None
    else:
        return np.zeros((0, 3), np.float32), None
    step = max(1, -(-len(points) // max_points))
    return points[::step], None if grey is None else grey[::step]


class LiveView:
    """One rerun recording: the map once, then ``log`` per frame (thread-safe: the server's workers call it)."""

    def __init__(self, recording: Any, rr: Any):
        self.rec, self.rr = recording, rr
        self.lock = Lock()
        self.frame = 0
        self.estimated: list[np.ndarray] = []
        self.true: list[np.ndarray] = []

    @classmethod
    def start(cls, the_map: Map, target: str = "spawn", app_id: str = "sceneloc") -> LiveView:
        rr = import_rerun()
        rec = rr.RecordingStream(app_id)
        if target == "spawn":
            rec.spawn()
        else:
            rec.save(str(Path(target)))
        view = cls(rec, rr)
        points, grey = map_points(the_map)
        colours = None if grey is None else np.repeat(grey[:, None], 3, axis=1)
        rec.log("world/map", rr.Points3D(points, colors=colours, radii=0.005), static=True)
        return view

    def log(self, image: np.ndarray, K: np.ndarray | None, res: Localization, true_pose: np.ndarray | None = None,
            name: str | None = None) -> None:
        """Log one query ``image (H, W, 3)`` with its estimated camera-to-world pose (and the true one)."""
        rr = self.rr
        with self.lock:
            self.rec.set_time("frame", sequence=self.frame)
            self.frame += 1
            if res.pose is not None:
                self.estimated.append(np.asarray(res.pose)[:3, 3])
                self.rec.log("world/camera", rr.Transform3D(translation=res.pose[:3, 3], mat3x3=res.pose[:3, :3]))
                if K is not None:
                    self.rec.log("world/camera/image", rr.Pinhole(image_from_camera=K,
                                                                  resolution=[image.shape[1], image.shape[0]]))
            self.rec.log("world/camera/image", rr.Image(image))
            if len(self.estimated) > 1:
                self.rec.log("world/estimated", rr.LineStrips3D([np.stack(self.estimated)], colors=[[255, 80, 40]]))
            if true_pose is not None:
                self.true.append(np.asarray(true_pose)[:3, 3])
                if len(self.true) > 1:
                    self.rec.log("world/true", rr.LineStrips3D([np.stack(self.true)], colors=[[40, 200, 80]]))
            status = "no pose" if res.pose is None else f"{res.inliers} inliers"
            self.rec.log("status", rr.TextLog(f"{name or 'frame'}: {status}"))

    def on_result(self, map_name: str, image: np.ndarray, res: Localization) -> None:
        """The server's hook (``LocalizationService.on_result``)."""
        self.log(image, None, res, name=map_name)

    def close(self) -> None:
        """Write out everything logged (a recording file is complete after this)."""
        self.rec.flush()
        self.rec.disconnect()
