"""Correspondence diagnostics: ground-truth errors of predicted scene coordinates, confidences of every
confidence net of a map, ROC curves and the example frames of the error/confidence figure."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sceneloc.data.dataset import evenly_spaced, scene_coordinates_at
from sceneloc.nets.losses import INLIER_THRESHOLD_M

EXAMPLE_FRAMES = 3                         # frames shown in the error/confidence map figure
EXAMPLE_POINTS = 40_000                    # prediction grid of the example maps (denser than for poses)
ERROR_MAP_MAX_M = 0.5                      # colour scale of the error maps; larger errors saturate
FIG2_SAMPLES_PER_FRAME = 8                 # random N_k samples per frame for the Fig. 2 histograms
ROC_POINTS_PER_FRAME = 2000                # correspondences per frame kept for the ROC (memory bound)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates ``(M,)`` over all score thresholds (high score = positive) and
    the area under the curve. Tied scores form one step (so equal scores give AUC 0.5)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_run]
    fp = last_of_run + 1 - tp
    tpr = np.r_[0.0, tp / max(y.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~y).sum(), 1)]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, auc


# ====================================================================== correspondence diagnostics


def correspondence_errors(frame, depth: np.ndarray, pixels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Distance (m) ``(...)`` of predictions ``coords (..., 3)`` at full-resolution ``pixels (..., 2)``
    to the ground truth from the frame's ``depth (H, W)`` and pose; nan where there is no depth."""
    gt, valid = scene_coordinates_at(depth, frame.pose, frame.K, pixels)
    err = np.linalg.norm(coords - gt, axis=-1)
    err[~valid] = np.nan
    return err


def _net_label(net, role: str) -> str:
    return f"{net.mode} ({role})"


def confidence_scores(the_map, pixels: np.ndarray, coords: np.ndarray, image_hw: tuple[int, int],
                      primary: np.ndarray | None) -> dict[str, np.ndarray]:
    """Confidences ``(N,)`` of the correspondences by every confidence net the map has, labelled
    ``mode (role)``; the first entry is the one pose estimation uses (``primary``, already computed).
    The inlier classifier (paper Fig. 3) is run here: it never takes part in localization."""

    def run(net) -> np.ndarray:
        with torch.no_grad():
            # (1, N) grid: _confidences groups points into N_k sets whatever the grid's shape.
            c = the_map._confidences(torch.as_tensor(pixels, dtype=torch.float32, device=the_map.device)[None],
                                     torch.as_tensor(coords, dtype=torch.float32, device=the_map.device)[None],
                                     image_hw, net=net)
        return c.reshape(-1).cpu().numpy()

    out = {}
    if the_map.confidence_net is not None:
        # estimators that ignore confidences (ransac) leave ``primary`` None: the report still scores the net
        scores = run(the_map.confidence_net) if primary is None else np.asarray(primary, dtype=np.float32)
        out[_net_label(the_map.confidence_net, "confidence network")] = scores
    if the_map.classifier is not None:
        out[_net_label(the_map.classifier, "inlier classifier")] = run(the_map.classifier)
    return out


@dataclass
class Diagnostics:
    """Correspondence statistics pooled over the frames that have depth ground truth.

    ``sampled``/``confident`` hold, for paper Fig. 2, the errors of random N_k samples of each
    frame's predictions and of the N_best most confident points of each sample; ``roc_*`` a random
    subset of every frame's predictions with their confidences (Fig. 3).
    """
    n_k: int
    n_best: int
    rng: np.random.Generator
    frames: int = 0
    valid: int = 0
    inliers: int = 0
    used_valid: int = 0
    used_inliers: int = 0
    used_known: bool = False
    sampled: list = field(default_factory=list)
    confident: list = field(default_factory=list)
    roc_errors: list = field(default_factory=list)
    roc_scores: dict = field(default_factory=dict)

    def add(self, errors: np.ndarray, scores: dict[str, np.ndarray], used: np.ndarray | None) -> None:
        """One frame: ``errors (N,)`` (nan = no ground truth), confidences ``(N,)`` per net (first =
        the one poses use), ``used (M,)`` indices of the pose's correspondences (None if unknown)."""
        ok = np.isfinite(errors)
        self.frames += 1
        self.valid += int(ok.sum())
        self.inliers += int((errors[ok] < INLIER_THRESHOLD_M).sum())
        if used is not None:
            self.used_known = True
            e = errors[used]
            e = e[np.isfinite(e)]
            self.used_valid += e.size
            self.used_inliers += int((e < INLIER_THRESHOLD_M).sum())
        n = len(errors)
        primary = next(iter(scores.values()), None)
        for _ in range(FIG2_SAMPLES_PER_FRAME):
            # As pose estimation does: N_k random points, then the most confident of them.
            pick = self.rng.choice(n, size=min(self.n_k, n), replace=False)
            self.sampled.append(errors[pick])
            if primary is not None:
                best = pick[np.argsort(-primary[pick], kind="stable")[:self.n_best]]
                self.confident.append(errors[best])
        keep = np.flatnonzero(ok)
        keep = self.rng.choice(keep, size=min(ROC_POINTS_PER_FRAME, keep.size), replace=False)
        self.roc_errors.append(errors[keep])
        for label, s in scores.items():
            self.roc_scores.setdefault(label, []).append(s[keep])

    def inlier_shares(self) -> dict:
        """Share of predictions with error < 10 cm, of all and of those used for the pose (None = unknown)."""
        return {"all_predictions": self.inliers / self.valid if self.valid else None,
                "used_for_pose": self.used_inliers / self.used_valid if self.used_known and self.used_valid else None}



def concat_finite(parts: list[np.ndarray]) -> np.ndarray:
    """The finite values of a list of arrays, as one flat array."""
    x = np.concatenate(parts) if parts else np.zeros(0)
    return x[np.isfinite(x)]


def add_frame(diag: Diagnostics, the_map, frame, pixels: np.ndarray, coords: np.ndarray,
               confidence: np.ndarray | None, used: np.ndarray | None) -> None:
    """Ground-truth errors and confidences of one frame's correspondences ``(N, 2)``/``(N, 3)`` into ``diag``."""
    if frame.depth_path is None:
        return
    depth = frame.load_depth()  # the image's size (checked by localize in rgbd mode)
    diag.add(correspondence_errors(frame, depth, pixels, coords),
             confidence_scores(the_map, pixels, coords, depth.shape, confidence), used)


@dataclass
class Example:
    """One frame of the Fig. 4 panel: image ``(H, W, 3)``, error and confidence maps ``(h, w)``
    (nan = no ground truth; None when unavailable)."""
    name: str
    image: np.ndarray
    error: np.ndarray | None
    confidence: np.ndarray | None


def example_maps(the_map, frames: list, count: int = EXAMPLE_FRAMES) -> list[Example]:
    """Dense error and confidence maps of ``count`` evenly spaced frames."""
    picks = evenly_spaced(len(frames), count)
    out = []
    for i in picks:
        image = frames[i].load_image()
        pred = the_map.predict(image, max_points=EXAMPLE_POINTS)
        error = None
        if frames[i].depth_path is not None:
            depth = frames[i].load_depth(image.shape[:2])
            error = correspondence_errors(frames[i], depth, pred.pixels, pred.coords)
        out.append(Example(frames[i].name, image, error, pred.confidence))
    return out
