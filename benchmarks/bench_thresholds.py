"""The pose stage's thresholds on one map: PnP inlier threshold (RGB), Kabsch polish thresholds and the
depth offset's prior (RGB-D, clean and shifted depth).

The network runs once per test frame; its correspondences are cached (``--cache``) and every row
re-estimates all poses from them with one ``PoseConfig`` change, so rows differ only by that change.
Accuracy is the share of frames within 5 cm / 5 deg; ms is the pose estimation alone (median).

Usage:
    python benchmarks/bench_thresholds.py --map MAP_DIR --data DATASET [--cache preds.pkl] \\
        [--px 10 15 20 25 30 40] [--polish none 0.05 0.05,0.03] [--polish-px 15 15,10] \\
        [--offset-sigma 0 0.0015] [--shift-px 4] [--shift-m 0.03]

``--offset-sigma`` rows run on the query depth as read and on the depth moved as in
``bench_estimators.py`` (``--shift-px`` pixels right and down, ``--shift-m`` further along every ray).
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

import numpy as np

from bench_estimators import shift_depth
from sceneloc.data.dataset import camera_points, load_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.estimate import PoseConfig, estimate_pose
from sceneloc.report.evaluation import pose_error_arrays, pose_metrics


def cached_predictions(map_dir: str, frames: list, cache: Path | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(pixels (N, 2), coords (N, 3))`` of every frame, from ``cache`` when it exists."""
    if cache is not None and cache.exists():
        return pickle.loads(cache.read_bytes())
    the_map = Map.load(map_dir)
    preds = []
    for f in frames:
        p = the_map.predict(f.load_image(), confidence=False)
        preds.append((p.pixels.reshape(-1, 2), p.coords.reshape(-1, 3)))
    if cache is not None:
        cache.write_bytes(pickle.dumps(preds))
    return preds


def score(frames: list, preds: list, config: PoseConfig, cams: list | None) -> tuple[float, float]:
    """Share within 5 cm / 5 deg and median pose ms of ``config`` on cached correspondences (RGB-D with ``cams``)."""
    poses, ms = [], []
    for i, (f, (px, X)) in enumerate(zip(frames, preds, strict=True)):
        t0 = time.perf_counter()
        res = estimate_pose(px, X, f.K, camera_points=None if cams is None else cams[i], config=config,
                            rng=np.random.default_rng([0, i]))
        ms.append((time.perf_counter() - t0) * 1e3)
        poses.append(res.pose)
    accuracy = pose_metrics(*pose_error_arrays(poses, [f.pose for f in frames]))["accuracy"]["5cm_5deg"]
    return accuracy, float(np.median(ms))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the network's correspondences")
    ap.add_argument("--px", type=float, nargs="*", default=[10, 15, 20, 25, 30, 40], help="PnP thresholds (RGB)")
    ap.add_argument("--polish", nargs="*", default=["none", "0.05", "0.05,0.03"],
                    help="Kabsch polish thresholds in metres, comma-separated per row (RGB-D)")
    ap.add_argument("--polish-px", nargs="*", default=[],
                    help="PnP polish thresholds in pixels after RANSAC's, comma-separated per row (RGB)")
    ap.add_argument("--offset-sigma", type=float, nargs="*", default=[],
                    help="PoseConfig.depth_offset_sigma_m per row, metres (0: off), on clean and shifted depth")
    ap.add_argument("--shift-px", type=int, default=4,
                    help="shifted depth: pixels right and down (default %(default)s)")
    ap.add_argument("--shift-m", type=float, default=0.03,
                    help="shifted depth: metres along every ray (default %(default)s)")
    args = ap.parse_args()
    frames = load_scene(args.data).frames(args.split)
    preds = cached_predictions(args.map, frames, args.cache)
    print(f"`{args.map}` on `{args.data}` ({args.split}, {len(frames)} frames)\n")
    print("| mode | setting | 5 cm / 5 deg | pose ms median |\n|---|---|---:|---:|")
    for px in args.px:
        acc, ms = score(frames, preds, PoseConfig(inlier_threshold_px=px), None)
        print(f"| rgb | PnP threshold {px:g} px | {100 * acc:.1f} % | {ms:.0f} |", flush=True)
    for spec in args.polish_px:
        polish = tuple(float(v) for v in spec.split(","))
        acc, ms = score(frames, preds, PoseConfig(polish_thresholds_px=polish), None)
        print(f"| rgb | PnP polish {spec} px | {100 * acc:.1f} % | {ms:.0f} |", flush=True)
    cams = [camera_points(f.load_depth(), px, f.K) for f, (px, _) in zip(frames, preds, strict=True)
            ] if args.polish else []
    for spec in args.polish:
        thresholds = () if spec == "none" else tuple(float(v) for v in spec.split(","))
        acc, ms = score(frames, preds, PoseConfig(polish_thresholds_m=thresholds), cams)
        print(f"| rgbd | Kabsch polish {spec} | {100 * acc:.1f} % | {ms:.0f} |", flush=True)
    for depth in ("clean", "shifted") if args.offset_sigma else ():
        moved = [camera_points(shift_depth(f.load_depth(), args.shift_px, args.shift_m) if depth == "shifted"
                               else f.load_depth(), px, f.K) for f, (px, _) in zip(frames, preds, strict=True)]
        for sigma in args.offset_sigma:
            acc, ms = score(frames, preds, PoseConfig(depth_offset_sigma_m=sigma), moved)
            row = f"| rgbd {depth} | depth offset prior {1000 * sigma:g} mm | {100 * acc:.1f} % | {ms:.0f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
