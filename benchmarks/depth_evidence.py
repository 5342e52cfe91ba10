"""What the evidence gates of ``PoseConfig`` see, read from a ``bench_folds.py`` work folder's scores.

For every scored (fold, ground truth) cell of one estimator label (the poses in ``WORK/scores/LABEL``
and the cached network output in ``WORK/cache``), with no new localization:

* ``offsets``: the image offset (``pose.fit.image_offset_px``) of each RGB-D pose, recorded and
  misregistered depth: can it tell depth moved against the image apart (``depth_image_offset_max_px``)?
* ``fallback``: what "RGB-D, but the RGB pose where the RGB-D pose's image offset exceeds T px" would
  place within 5 cm / 5 deg, for several T (the simplest fallback, before re-registration);
* ``view-gate``: what keeping the scene-view alignment only where it keeps a share S of the PnP pose's
  2D-3D inliers (``refine_min_inlier_share``) would place, from the rows ``rgb`` and ``rgb-noview``.

    python benchmarks/depth_evidence.py --work runs/folds --label default --folds 1 --every 2
    python benchmarks/depth_evidence.py --work runs/folds --label default --folds 2 3
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

import bench_folds
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import reprojection_errors
from sceneloc.pose.config import PoseConfig
from sceneloc.pose.fit import image_offset_px

THRESHOLDS_PX = (3.0, 4.0, 5.0, 6.0)
SHARES = (0.5, 0.7, 0.8, 0.9)


def placed(poses: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: each pose ``(N, 4, 4)`` (NaN: failed) within 5 cm / 5 deg of ``gt (N, 4, 4)``."""
    rot, trans = bench_folds.stored_pose_errors(poses, gt)
    return (rot < 5) & (trans < 0.05)


def offsets_px(poses: np.ndarray, preds: list, frames: list) -> np.ndarray:
    """``(N,)`` length of each pose's image offset (NaN: failed; inf: no matches near)."""
    out = np.full(len(poses), np.nan)
    for i, (T, pred, frame) in enumerate(zip(poses, preds, frames, strict=True)):
        if not np.isnan(T).any():
            offset = image_offset_px(pred.pixels.reshape(-1, 2), pred.coords.reshape(-1, 3), frame.K, T)
            out[i] = np.inf if offset is None else float(np.linalg.norm(offset))
    return out


def inlier_share(refined: np.ndarray, start: np.ndarray, preds: list, frames: list) -> np.ndarray:
    """``(N,)`` 2D-3D inliers (at the default PnP threshold) of each refined pose over those of its starting
    pose (1 where either failed)."""
    out = np.ones(len(refined))
    for i, (a, b, pred, frame) in enumerate(zip(refined, start, preds, frames, strict=True)):
        if not (np.isnan(a).any() or np.isnan(b).any()):
            pixels, scene = pred.pixels.reshape(-1, 2), pred.coords.reshape(-1, 3)
            threshold = PoseConfig().threshold_px_for(frame.K)
            count = [(reprojection_errors(T, scene, pixels, frame.K) < threshold).sum() for T in (a, b)]
            out[i] = count[0] / max(count[1], 1)
    return out


def cell_lines(work: Path, label: str, fold: int, gt: str, every: int) -> list[str]:
    name = bench_folds.cell_name(fold, gt)
    z = np.load(work / "scores" / label / f"{name}.npz")
    preds = pickle.loads((work / "cache" / f"{name}_every{every}.pkl").read_bytes())
    frames = load_scene(work / "data" / name).frames("test")[::every]
    ok = {row: placed(z[f"pose_{row}"], z["gt"]) for row in bench_folds.ROWS if f"pose_{row}" in z}
    off = {row: offsets_px(z[f"pose_{row}"], preds, frames) for row in ("rgbd", "rgbd-shifted")}
    lines = []
    for row in ("rgbd", "rgbd-shifted"):
        q = np.nanpercentile(off[row], [10, 50, 90])
        lines.append(f"| {name} | offsets | {row} | median {q[1]:.1f} px (p10 {q[0]:.1f}, p90 {q[2]:.1f}) |")
    for row in ("rgbd", "rgbd-shifted"):
        cols = []
        for t in THRESHOLDS_PX:
            back = off[row] > t
            cols.append(f"{t:g} px: {100 * np.where(back, ok['rgb'], ok[row]).mean():.1f} % "
                        f"({100 * back.mean():.0f} % fall back)")
        lines.append(f"| {name} | fallback | {row} ({100 * ok[row].mean():.1f} %, RGB {100 * ok['rgb'].mean():.1f} %) "
                     f"| {'; '.join(cols)} |")
    share = inlier_share(z["pose_rgb"], z["pose_rgb-noview"], preds, frames)
    cols = [f"{s:g}: {100 * np.where(share >= s, ok['rgb'], ok['rgb-noview']).mean():.1f} % "
            f"({100 * (share < s).mean():.0f} % rejected)" for s in SHARES]
    lines.append(f"| {name} | view-gate | rgb {100 * ok['rgb'].mean():.1f} %, without the alignment "
                 f"{100 * ok['rgb-noview'].mean():.1f} % | {'; '.join(cols)} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="a bench_folds.py work folder, scored")
    ap.add_argument("--label", default="default", help="the estimator label whose scores to read")
    ap.add_argument("--folds", type=int, nargs="+", default=list(bench_folds.FOLDS), choices=list(bench_folds.FOLDS))
    ap.add_argument("--gts", nargs="+", default=list(bench_folds.GROUND_TRUTHS))
    ap.add_argument("--every", type=int, default=1, help="the frames the scores were made on (bench_folds --every)")
    args = ap.parse_args(argv)
    print("| cell | what | row | result |\n|---|---|---|---|")
    for fold in args.folds:
        for gt in args.gts:
            print("\n".join(cell_lines(args.work.resolve(), args.label, fold, gt, args.every)), flush=True)


if __name__ == "__main__":
    main()
