"""Tracking: frames of a stream localized from the previous pose, relocalized only when that fails.

A robot or an AR device sends frames a few centimetres apart. Relocalizing each from scratch runs
the network and RANSAC every time; the previous pose already places the camera close enough for the
alignments every pose ends with anyway (``surface.cloud.align_depth``: ICP of the query depth to the
mapping surface; ``surface.view.align_image``: the surface rendered in grey at the pose and matched to
the image by optical flow). Both align to the *map*, not to the previous frame, so errors do not
accumulate along the stream.

A tracked pose is accepted only when the alignment held (enough query depth near the surface, or
enough flow matches after the re-fit); otherwise the frame is relocalized in full. A relocalized pose
whose calibrated probability is below ``TrackingConfig.min_probability`` does not seed tracking: the
next frame is relocalized again. Tracked poses carry no calibrated probability (NaN): the map's
calibration models scene-coordinate inliers, which a tracked frame does not compute.

>>> tracker = Tracker(the_map)                                          # doctest: +SKIP
>>> for image, depth in stream:                                          # doctest: +SKIP
...     res = tracker.track(image, depth)                                # res.tracked: no network pass
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.geometry import invert_pose
from sceneloc.mapping.scene_map import DEFAULT_POSE_POINTS, Localization, Map, check_image
from sceneloc.pose.config import MODES, PoseConfig, estimator_config
from sceneloc.progress import progress as progress_bar
from sceneloc.surface.cloud import align_depth, depth_points
from sceneloc.surface.view import align_image


@dataclass(frozen=True)
class TrackingConfig:
    """When a frame is tracked from the previous pose and when it is relocalized.

    Attributes:
        min_matched: RGB-D: share of the query's depth points within the ICP's last distance of the
            surface for a tracked pose to stand (a pose that slid off the scene matches few).
        min_view_inliers: RGB: flow correspondences that must stay inliers of the alignment's last
            re-fit (a 320 px rendering sampled every 4th pixel offers ~4800).
        min_probability: a relocalized pose below this calibrated probability does not seed tracking
            (NaN probabilities, of a map without calibration, always do).
        constant_velocity: predict the prior from the last two poses' motion instead of the last pose.
        relocalize_every: relocalize every N-th frame even when tracking holds (0: only on failure).
            ICP from the previous pose can slide along a direction the depth barely constrains (a
            wall, a counter) a little each frame; on redkitchen's test stretch RGB-D tracking that
            never re-anchored drifted past 5 cm every ~40 frames before its match share fell
            (measured in docs/server.md).
    """
    min_matched: float = 0.6
    min_view_inliers: int = 300
    min_probability: float = 0.5
    constant_velocity: bool = True
    relocalize_every: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.min_matched <= 1:
            raise SceneLocError(f"min_matched {self.min_matched} must lie in [0, 1]")
        if self.min_view_inliers < 0 or self.relocalize_every < 0:
            raise SceneLocError("min_view_inliers and relocalize_every must not be negative")


@dataclass(kw_only=True)
class TrackedLocalization(Localization):
    """A ``Localization`` that also says whether the frame was ``tracked`` (aligned from the prior, no
    network pass) or relocalized, and why tracking did not hold (``tracking_failure``)."""
    tracked: bool = False
    tracking_failure: str | None = field(default=None)


def predicted_prior(T_wc_last: np.ndarray, T_wc_before: np.ndarray | None, constant_velocity: bool) -> np.ndarray:
    """Camera-to-world prior ``(4, 4)`` for the next frame: the last pose moved once more by the motion
    from ``T_wc_before`` to ``T_wc_last`` (constant velocity), or the last pose itself."""
    if not constant_velocity or T_wc_before is None:
        return T_wc_last.copy()
    motion = invert_pose(T_wc_before) @ T_wc_last   # the last step, in the camera frame before it
    return T_wc_last @ motion


class Tracker:
    """Localizes a stream of frames of one camera against ``the_map``, each from the previous pose.

    ``estimator`` (a ``PoseConfig`` or method name) runs the relocalizations; its ICP distances and
    offset prior, and its view rounds, run the tracked alignments. Not thread-safe: one stream each.
    """

    def __init__(self, the_map: Map, estimator: PoseConfig | str | None = None,
                 config: TrackingConfig = TrackingConfig()):
        self.map = the_map
        self.estimator = estimator_config(estimator)
        self.config = config
        self.reset()

    def reset(self, T_wc: np.ndarray | None = None) -> None:
        """Forget the stream; with ``T_wc (4, 4)`` the next frame is tracked from that pose."""
        self.last: np.ndarray | None = None if T_wc is None else np.asarray(T_wc, dtype=np.float64)
        self.before: np.ndarray | None = None
        self.offset_m = 0.0
        self.since_relocalization = 0

    def _align(self, image: np.ndarray, depth: np.ndarray | None, K: np.ndarray, prior: np.ndarray,
               config: PoseConfig) -> tuple[np.ndarray, int, float, float] | str:
        """Pose, inlier count, score and depth offset aligned from ``prior``, or why it did not hold."""
        # a map of the colour camera's poses follows the image, as its RGB-D poses do (MappingConfig.pose_camera)
        if depth is not None and self.map.pose_camera == "depth":
            if self.map.cloud is None or not config.icp_distances_m:
                return "the map has no scene surface to track depth against"
            camera = depth_points(depth, K)
            if len(camera) == 0:
                return "the query depth is empty"
            fit = align_depth(camera, prior, self.map.cloud, config.icp_distances_m, config.icp_offset_sigma_m,
                              self.offset_m)
            if fit is None:
                return "ICP from the prior did not converge"
            if fit.matched < self.config.min_matched:
                return f"ICP matched {fit.matched:.0%} of the depth, fewer than {self.config.min_matched:.0%}"
            return fit.pose, int(round(fit.matched * len(camera))), fit.matched, fit.offset_m
        if self.map.view is None or not config.view_rounds:
            return "the map has no scene view to track images against"
        aligned = align_image(image, K, prior, self.map.view, config.view_rounds)
        if aligned is None:
            return "the image alignment from the prior did not hold"
        if aligned.inliers < self.config.min_view_inliers:
            return f"{aligned.inliers} alignment inliers, fewer than {self.config.min_view_inliers}"
        return aligned.pose, aligned.inliers, float(aligned.inliers), 0.0

    def track(self, image: np.ndarray, depth: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
              rng: np.random.Generator | None = None) -> TrackedLocalization:
        """Camera-to-world pose of the next frame (``Map.localize``'s arguments): aligned from the
        previous pose when there is one and the alignment holds, else relocalized in full."""
        # the map's own checks of the query camera (size against the mapping images when K is None) and depth
        K, depth = self.map._checked_query(image, depth, intrinsics)
        config = self.map.estimator_for(self.estimator, K)
        due = self.config.relocalize_every and self.since_relocalization >= self.config.relocalize_every
        why: str | None = "no previous pose" if self.last is None else ("periodic relocalization" if due else None)
        t0 = time.perf_counter()
        if why is None and self.last is not None:
            prior = predicted_prior(self.last, self.before, self.config.constant_velocity)
            aligned = self._align(image, depth, K, prior, config)
            tracking_ms = (time.perf_counter() - t0) * 1e3
            if not isinstance(aligned, str):
                pose, inliers, score, offset = aligned
                self._advance(pose, offset, relocalized=False)
                timings = {"network_ms": 0.0, "sampling_ms": 0.0, "refinement_ms": tracking_ms,
                           "total_ms": tracking_ms}
                return TrackedLocalization(pose=pose, inliers=inliers, score=score, timings=timings,
                                           depth_offset_m=offset, tracked=True)
            why = aligned
        tracking_ms = (time.perf_counter() - t0) * 1e3
        check_image(image)   # the rest of Map.localize's checks passed above: the depth is converted once
        res = self.map._localize(image, depth, K, self.estimator, rng, DEFAULT_POSE_POINTS, None)
        timings = dict(res.timings)
        timings["refinement_ms"] += tracking_ms   # the failed attempt is part of this frame's time
        timings["total_ms"] += tracking_ms
        seeds = res.pose is not None and not (res.probability < self.config.min_probability)  # NaN seeds
        if seeds and res.pose is not None:
            self._advance(res.pose, res.depth_offset_m, relocalized=True)
        else:
            self.reset()
        found = {f.name: getattr(res, f.name) for f in fields(res)} | {"timings": timings}
        return TrackedLocalization(**found, tracked=False, tracking_failure=why)

    def _advance(self, T_wc: np.ndarray, offset_m: float, relocalized: bool) -> None:
        # a relocalization restarts the motion model: the jump from the last tracked pose is no motion
        self.before = None if relocalized else self.last
        self.last = T_wc
        self.offset_m = offset_m
        self.since_relocalization = 0 if relocalized else self.since_relocalization + 1


def track_frames(the_map: Map, frames: Iterable, mode: str = "rgb", estimator: PoseConfig | str | None = None,
                 config: TrackingConfig = TrackingConfig(), seed: int = 0,
                 progress: bool = True) -> Iterator[tuple[Any, TrackedLocalization]]:
    """``mapping.queries.localize_frames`` for a stream: dataset ``frames`` in the order given, each tracked
    from the previous one (``Tracker``); yields ``(frame, TrackedLocalization)`` without dense arrays."""
    if mode not in MODES:
        raise SceneLocError(f"unknown mode {mode!r} (choose rgb or rgbd)")
    frames = list(frames)
    tracker = Tracker(the_map, estimator, config)
    for i, frame in enumerate(progress_bar(frames, desc=f"tracking ({mode})", unit="frame", disable=not progress,
                                           dynamic_ncols=True, mininterval=1.0)):
        image = frame.load_image()
        depth = frame.load_depth(image.shape[:2]) if mode == "rgbd" else None
        res = tracker.track(image, depth, frame.K, rng=np.random.default_rng([seed, i]))
        res.pixels = res.coords = res.confidence = res.used = None
        yield frame, res
