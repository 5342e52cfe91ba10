"""A calibrated per-pose confidence: the probability that a pose is within 5 cm / 5 deg.

A robot or an AR session needs to know when to distrust a pose. The estimator's own numbers (inlier
count, inlier ratio) rank poses well but are not probabilities, and their scale depends on the map
and the mode. ``PoseCalibration`` turns them into one: a logistic regression per mode (``rgb``:
PnP inliers in pixels, ``rgbd``: Kabsch inliers in metres) fitted on the poses of mapping frames
that a second, short-trained head never saw (``mapping.build.calibrate_with_held_out_head``), so it sees
failures as well as successes rather than the poses of frames a head has memorised, which all
localize. Its third feature is the pose's *view novelty* (``view_novelty``): how far the estimated
camera is from the nearest view the head learned from. Held-out frames and real queries differ in
how new their views are (a held-out recording can be further from the rest than the queries are, or
nearer), and at equal inlier counts a newer view is less often right: with the novelty in the model
the calibration carries over from one to the other.

>>> cal = PoseCalibration.fit({"rgb": (inliers, n_points, error_ratio)}, settings)  # doctest: +SKIP
>>> cal.probability("rgb", settings, inliers=812, n_points=4800)                # doctest: +SKIP
0.93
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.pose.config import MODE_SETTINGS, MODES

CALIBRATION_FILE = "calibration.json"
#: Ridge penalty on the standardised feature weights: a few dozen frames must not give 0 / 1 certainties.
RIDGE = 1.0
MIN_FRAMES = 10   # fewer held-out frames than this: no calibration for that mode


#: View novelty: distance to the nearest mapping view in units of these (camera centre metres, angle
#: between optical axes in degrees; the larger of the two counts), capped: beyond it all views are new.
NOVELTY_M, NOVELTY_DEG, NOVELTY_CAP = 0.3, 30.0, 3.0


def view_novelty(T_wc: np.ndarray, centres: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """How new the views of camera-to-world poses ``T_wc (N, 4, 4)`` are against mapping views with
    camera centres ``centres (M, 3)`` and optical axes ``axes (M, 3)`` (unit): ``(N,)``, the smallest
    over the mapping views of ``max(distance / NOVELTY_M, angle / NOVELTY_DEG)``, capped at
    ``NOVELTY_CAP`` (also the value of a non-finite pose). Below 1: a mapping view within 30 cm and 30 deg."""
    T = np.asarray(T_wc, dtype=np.float64).reshape(-1, 4, 4)
    distance = np.linalg.norm(T[:, None, :3, 3] - np.asarray(centres)[None], axis=-1)
    cosine = np.clip(T[:, :3, 2] @ np.asarray(axes).T, -1.0, 1.0)
    score = np.maximum(distance / NOVELTY_M, np.degrees(np.arccos(cosine)) / NOVELTY_DEG)
    best = score.min(axis=1) if score.shape[1] else np.full(len(T), NOVELTY_CAP)
    return np.where(np.isfinite(best), np.minimum(best, NOVELTY_CAP), NOVELTY_CAP)


def pose_features(inliers: np.ndarray, n_points: np.ndarray, novelty: np.ndarray | None = None) -> np.ndarray:
    """``(N, 2)`` features of ``N`` poses: log(1 + inlier count) and inlier ratio; ``(N, 3)`` with
    their ``novelty (N,)`` (``view_novelty``)."""
    inliers = np.asarray(inliers, dtype=np.float64)
    n_points = np.maximum(np.asarray(n_points, dtype=np.float64), 1.0)
    columns = [np.log1p(inliers), inliers / n_points]
    if novelty is not None:
        columns.append(np.broadcast_to(np.asarray(novelty, dtype=np.float64), inliers.shape))
    return np.stack(columns, axis=-1)


def error_ratio(rotation_deg: np.ndarray | float, translation_m: np.ndarray | float, max_deg: float = 5.0,
                max_cm: float = 5.0) -> np.ndarray:
    """How far a pose is from the threshold: ``max(translation / max_cm, rotation / max_deg)``; below 1
    is within it. A failed pose is ``inf``."""
    return np.maximum(np.asarray(translation_m, dtype=np.float64) * 100.0 / max_cm,
                      np.asarray(rotation_deg, dtype=np.float64) / max_deg)


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, iterations: int = 50) -> np.ndarray:
    """Weights ``(D + 1,)`` (bias first) of a ridge-penalised logistic regression of labels ``y (N,)``
    in {0, 1} on features ``x (N, D)``, by Newton's method; the bias is not penalised."""
    X = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    w = np.zeros(X.shape[1])
    penalty = np.full(X.shape[1], ridge)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + penalty * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass
class ModeCalibration:
    """Logistic model of one mode on standardised features: ``p = sigmoid(w . [1, (f - mean) / std])``."""
    weights: list[float]
    mean: list[float]
    std: list[float]
    frames: int            # held-out frames it was fitted on
    success_rate: float    # their observed share within the threshold
    # the held-out frames themselves (inliers, correspondences, error ratio; null = failed): refittable
    held_out: dict[str, list] = field(default_factory=dict)

    @property
    def uses_novelty(self) -> bool:
        """Whether the model has the view-novelty feature (calibrations before it have two features)."""
        return len(self.mean) == 3

    def probability(self, inliers: np.ndarray, n_points: np.ndarray, novelty: np.ndarray | None = None) -> np.ndarray:
        """``(N,)`` probabilities for ``N`` poses (scalars broadcast); ``novelty`` is read only by a model
        that has it (``uses_novelty``), which needs it."""
        if self.uses_novelty and novelty is None:
            raise ValueError("this pose calibration needs the poses' view novelty")
        features = pose_features(inliers, n_points, novelty if self.uses_novelty else None)
        z = (features - np.asarray(self.mean)) / np.asarray(self.std)
        w = np.asarray(self.weights)
        return 1.0 / (1.0 + np.exp(-(w[0] + z @ w[1:])))


@dataclass
class PoseCalibration:
    """Per-mode probability that a pose is within ``max_cm`` / ``max_deg`` of the truth."""
    modes: dict[str, ModeCalibration] = field(default_factory=dict)
    max_cm: float = 5.0
    max_deg: float = 5.0
    #: the estimator settings it was fitted with (``pose.config.inlier_settings``): inlier counts under
    #: other settings (another method, threshold or re-fit) mean something else
    settings: dict = field(default_factory=dict)
    #: the map's mapping views, ``centres`` and optical ``axes`` (lists of 3-vectors, as in the file),
    #: that a query's view novelty is measured against; empty for a calibration without the novelty feature
    views: dict[str, list] = field(default_factory=dict)

    @cached_property
    def view_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``views`` as ``centres (M, 3)`` and ``axes (M, 3)`` arrays, made once (every query reads them)."""
        return np.asarray(self.views["centres"], np.float64), np.asarray(self.views["axes"], np.float64)

    @classmethod
    def fit(cls, samples: dict[str, tuple[np.ndarray, ...]], settings: dict, views: dict | None = None,
            max_cm: float = 5.0, max_deg: float = 5.0, ridge: float = RIDGE) -> PoseCalibration:
        """From ``{mode: (inliers (N,), n_points (N,), error (N,)[, novelty (N,)])}`` of held-out frames,
        ``error`` the ``error_ratio`` of each pose (``inf``: failed, which counts with 0 inliers) and
        ``novelty`` its ``view_novelty`` against the views the held-out head learned from. With novelty,
        ``views`` (``centres``, ``axes``: ``(M, 3)`` arrays or lists) are the map's own mapping views,
        which queries are measured against. Modes with fewer than ``MIN_FRAMES`` frames are skipped."""
        modes = {}
        for mode, (inliers, n_points, error, *rest) in samples.items():
            if mode not in MODES:
                raise SceneLocError(f"unknown calibration mode {mode!r} (choose {', '.join(MODES)})")
            error = np.asarray(error, dtype=np.float64)
            y = (error < 1.0).astype(np.float64)
            if len(y) < MIN_FRAMES:
                continue
            novelty = rest[0] if rest else None
            f = pose_features(inliers, n_points, novelty)
            mean, std = f.mean(axis=0), np.maximum(f.std(axis=0), 1e-6)
            w = fit_logistic((f - mean) / std, y, ridge)
            held_out = {"inliers": np.asarray(inliers).astype(int).tolist(),
                        "points": np.asarray(n_points).astype(int).tolist(),
                        "error": [round(float(e), 4) if np.isfinite(e) else None for e in error]}
            if novelty is not None:
                held_out["novelty"] = [round(float(v), 4) for v in novelty]
            modes[mode] = ModeCalibration([float(v) for v in w], mean.tolist(), std.tolist(), len(y), float(y.mean()),
                                          held_out)
        # rounded to 0.1 mm and 1e-5 in the file: far below what novelty resolves (30 cm, 30 deg)
        stored = {} if not views else {"centres": np.asarray(views["centres"], np.float64).round(4).tolist(),
                                       "axes": np.asarray(views["axes"], np.float64).round(5).tolist()}
        return cls(modes, max_cm, max_deg, dict(settings), stored)

    def probability(self, mode: str, settings: dict, inliers: float, n_points: int, success: bool = True,
                    pose: np.ndarray | None = None) -> float:
        """Probability that a pose found under ``settings`` (``pose.config.inlier_settings``) with
        ``inliers`` of ``n_points`` correspondences is within the threshold: 0 for a failed pose, NaN
        when this calibration has no model for ``mode`` or was fitted under other settings of that
        mode (``pose.config.MODE_SETTINGS``). A model with the view-novelty feature reads the
        camera-to-world ``pose (4, 4)`` (NaN without it)."""
        if not success:
            return 0.0
        same = all(key in self.settings and self.settings[key] == settings.get(key) for key in MODE_SETTINGS[mode])
        cal = self.modes.get(mode) if same else None
        if cal is None:
            return float("nan")
        novelty = None
        if cal.uses_novelty:
            if pose is None:
                return float("nan")
            novelty = view_novelty(pose, *self.view_arrays)
        return float(cal.probability(np.array([inliers]), np.array([n_points]), novelty)[0])

    def save(self, map_dir: Path) -> None:
        (Path(map_dir) / CALIBRATION_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, map_dir: Path) -> PoseCalibration | None:
        """The map's calibration, or None for a map made without one."""
        path = Path(map_dir) / CALIBRATION_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            # a file from before the settings were recorded names its method only: it matches no settings
            settings = raw["settings"] if "settings" in raw else {"method": raw["method"]}
            if "threshold_rad" in settings:   # fitted before RGB poses were aligned to a scene view: none
                settings.setdefault("view_rounds", 0)
            return cls({m: ModeCalibration(**c) for m, c in raw["modes"].items()}, raw["max_cm"], raw["max_deg"],
                       settings, raw.get("views", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SceneLocError(f"{path}: not a pose calibration file ({e})") from None


def reliability_bins(probability: np.ndarray, success: np.ndarray, bins: int = 5) -> list[dict]:
    """Reliability diagram data: per equal-width bin of predicted ``probability (N,)``, the frame
    count, mean predicted probability and observed share of ``success (N,)`` (NaN probabilities skipped)."""
    p, s = np.asarray(probability, dtype=np.float64), np.asarray(success, dtype=bool)
    keep = np.isfinite(p)
    p, s = p[keep], s[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "frames": n,
                     "predicted": float(p[m].mean()) if n else math.nan,
                     "observed": float(s[m].mean()) if n else math.nan})
    return rows


def operating_point(probability: np.ndarray, success: np.ndarray, min_probability: float = 0.5) -> dict:
    """What rejecting poses below ``min_probability`` does: share of wrong poses rejected, share of
    right poses kept, share of frames kept and accuracy among the kept ones."""
    p, s = np.nan_to_num(np.asarray(probability, dtype=np.float64), nan=0.0), np.asarray(success, dtype=bool)
    keep = p >= min_probability

    def share(a: np.ndarray, of: np.ndarray) -> float:
        return float(a[of].mean()) if of.any() else math.nan

    return {"min_probability": min_probability, "wrong_rejected": share(~keep, ~s), "right_kept": share(keep, s),
            "kept": float(keep.mean()) if len(keep) else math.nan, "accuracy_of_kept": share(s, keep)}
