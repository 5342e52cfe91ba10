"""Running a map over dataset frames: each frame read as a query (with a progress bar) and localized with
a per-frame seed, so that a frame's pose does not depend on the others."""

from __future__ import annotations

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.mapping.dsac_stage import resolve_stage
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import DSAC_METHODS, MODES, estimator_config
from sceneloc.pose.estimate import PoseConfig
from sceneloc.progress import progress as progress_bar


def frame_queries(frames: list, mode: str, progress: bool = True, desc: str | None = None):
    """Dataset ``frames`` read as queries one by one, with a progress bar (``desc``, default ``localizing
    (MODE)``); yields ``(i, frame, image, depth)``, ``depth`` the frame's for ``mode`` ``rgbd``, else None."""
    if mode not in MODES:
        raise SceneLocError(f"unknown mode {mode!r} (choose rgb or rgbd)")
    bar = progress_bar(frames, desc=desc or f"localizing ({mode})", unit="frame", disable=not progress,
                       dynamic_ncols=True, mininterval=1.0)
    for i, frame in enumerate(bar):
        image = frame.load_image()
        yield i, frame, image, frame.load_depth(image.shape[:2]) if mode == "rgbd" else None


def localize_frames(the_map: Map, frames: list, mode: str = "rgb", estimator: PoseConfig | str | None = None,
                    seed: int = 0, progress: bool = True, keep_points: bool = False):
    """Localize dataset frames one by one; yields ``(frame, Localization)``.

    ``mode`` is ``rgb`` (PnP on the image alone) or ``rgbd`` (Kabsch with the frame's depth; on a map of the
    colour camera's poses, the image's pose started from it).
    The random generator is seeded per frame, so a frame's result does not depend on the others.
    ``estimator`` is :meth:`Map.localize`'s.
    """
    if mode not in MODES:
        raise SceneLocError(f"unknown mode {mode!r} (choose rgb or rgbd)")
    config = estimator_config(estimator)
    if config.method in DSAC_METHODS:  # a missing DSAC stage fails here, before any frame
        resolve_stage(the_map, config.dsac_score)
    for i, frame, image, depth in frame_queries(frames, mode, progress):
        res = the_map.localize(image, depth=depth, intrinsics=frame.K, estimator=config,
                               rng=np.random.default_rng([seed, i]))
        yield frame, res if keep_points else res.without_points()
