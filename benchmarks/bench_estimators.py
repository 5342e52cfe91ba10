"""Pose estimators side by side on one map: accuracy and time per frame, RGB and RGB-D, with the
query depth as recorded and with depth misregistered against the image.

For every ``--methods`` entry and mode: ``rgb`` (no depth), ``rgbd`` with the frame's depth
(``clean``) and, unless ``--shift-px 0 --shift-m 0``, ``rgbd`` with the depth map moved by
``--shift-px`` pixels right and down and ``--shift-m`` metres further along every ray (``shifted``):
what a Kinect's imperfect colour/depth registration and asynchronous capture do to parts of a real
recording. The network runs once per frame and its time is added to every estimator's, so the
``ms`` columns are whole frames (network + pose), as ``sceneloc localize`` reports them.

Usage:
    python benchmarks/bench_estimators.py --map maps/kitchen --data ../shared/data/7scenes-redkitchen \
        [--methods ransac,joint] [--modes rgb,rgbd] [--shift-px 4] [--shift-m 0.03] [--frames 200] \
        [--split test] [--json out.json]

Prints a markdown table: method, mode, depth, % within 5 cm / 5 deg, median cm / deg, failures,
ms per frame (median, p95: network + pose) and of the pose estimation alone (median).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from sceneloc.data.dataset import evenly_spaced, load_scene
from sceneloc.mapping.scene_map import CONFIDENCE_METHODS, Map
from sceneloc.pose.config import DSAC_SCORES
from sceneloc.pose.estimate import DSAC_METHODS, METHODS, PoseConfig
from sceneloc.progress import progress
from sceneloc.report.evaluation import pose_error_arrays, pose_metrics


def shift_depth(depth: np.ndarray, shift_px: int | tuple[int, int], shift_m: float, scale: float = 1.0) -> np.ndarray:
    """Depth ``(H, W)`` (metres, 0 = none) moved ``shift_px`` pixels right and down (one number for both,
    or ``(right, down)``; the uncovered border gets no depth), scaled by ``scale`` and moved ``shift_m``
    further along every ray where there is depth."""
    dx, dy = (int(shift_px), int(shift_px)) if np.isscalar(shift_px) else (int(v) for v in shift_px)
    out = np.zeros_like(depth)
    h, w = depth.shape
    out[dy:, dx:] = depth[:h - dy, :w - dx]
    return np.where(out > 0, scale * out + shift_m, 0.0)


def subsample(frames: list, count: int | None) -> list:
    """``count`` frames evenly spread over the split (all when None or more than there are)."""
    if not count or count >= len(frames):
        return frames
    return [frames[i] for i in evenly_spaced(len(frames), count)]


def variants(modes: list[str], shift_px: int, shift_m: float) -> list[tuple[str, str]]:
    """(mode, depth) rows: rgb has no depth; rgbd clean, and shifted when a shift is asked for."""
    rows = []
    for mode in modes:
        if mode == "rgb":
            rows.append(("rgb", "-"))
        else:
            rows.append(("rgbd", "clean"))
            if shift_px or shift_m:
                rows.append(("rgbd", "shifted"))
    return rows


def run(the_map: Map, frames: list, methods: list[str], rows: list[tuple[str, str]], shift_px: int,
        shift_m: float, config: PoseConfig, seed: int = 0) -> dict:
    """Localize every frame with every (method, mode, depth); returns per-row lists of poses and ms."""
    out = {(m, mode, d): {"poses": [], "ms": [], "pose_ms": []} for m in methods for mode, d in rows}
    # Warm-up, untimed: the first network call and the first OpenCV calls pay one-off costs.
    warm = frames[0].load_image()
    for method in methods:
        the_map.localize(warm, intrinsics=frames[0].K, estimator=replace(config, method=method))
    for i, frame in enumerate(progress(frames, desc="localizing", unit="frame")):
        image = frame.load_image()
        need_depth = any(mode == "rgbd" for _, mode, _ in out)
        depth = frame.load_depth(image.shape[:2]) if need_depth else None
        depths = {"-": None, "clean": depth}
        if depth is not None and (shift_px or shift_m):
            depths["shifted"] = shift_depth(depth, shift_px, shift_m)
        # as in Map.localize: only the estimators that read confidences pay for the PointNet
        preds = {needs: the_map.predict(image, confidence=needs)
                 for needs in {method in CONFIDENCE_METHODS for method in methods if method not in DSAC_METHODS}}
        for (method, _mode, d), r in out.items():
            cfg = replace(config, method=method)
            # dsac/softam predict with their stage's network: localize runs it (and times it) itself
            pred = None if method in DSAC_METHODS else preds[method in CONFIDENCE_METHODS]
            res = the_map.localize(image, depth=depths[d], intrinsics=frame.K, estimator=cfg,
                                   rng=np.random.default_rng([seed, i]), prediction=pred)
            r["poses"].append(res.pose)
            r["ms"].append(res.timings["total_ms"])
            r["pose_ms"].append(res.timings["total_ms"] - res.timings["network_ms"])
    return out


def table(results: dict, ground_truth: list[np.ndarray]) -> tuple[str, list[dict]]:
    """Markdown table and its rows as dicts, from ``run``'s output and the frames' true poses."""
    lines = ["| method | mode | depth | 5 cm / 5 deg | median cm | median deg | failures | ms median | ms p95 "
             "| pose ms median |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for (method, mode, depth), r in results.items():
        rot, trans = pose_error_arrays(r["poses"], ground_truth)
        m = pose_metrics(rot, trans)
        ms = np.asarray(r["ms"])
        row = {"method": method, "mode": mode, "depth": depth, "within_5cm_5deg": m["accuracy"]["5cm_5deg"],
               "median_cm": 100 * m["median_translation_m"], "median_deg": m["median_rotation_deg"],
               "failures": m["failures"], "frames": m["frames"],
               "ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95)),
               "pose_ms_median": float(np.median(r["pose_ms"]))}
        rows.append(row)
        lines.append(f"| {method} | {mode} | {depth} | {100 * row['within_5cm_5deg']:.1f} % | {row['median_cm']:.1f} | "
                     f"{row['median_deg']:.2f} | {row['failures']} | {row['ms_median']:.0f} | {row['ms_p95']:.0f} | "
                     f"{row['pose_ms_median']:.0f} |")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map", required=True, help="map directory (sceneloc map)")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--split", default="test")
    p.add_argument("--methods", default="ransac,joint",
                   help=f"comma-separated PoseConfig methods of {', '.join(METHODS)} (default %(default)s)")
    p.add_argument("--modes", default="rgb,rgbd", help="comma-separated rgb and/or rgbd (default %(default)s)")
    p.add_argument("--shift-px", type=int, default=4, help="shift of the depth map against the image, pixels "
                   "right and down, for the 'shifted' rows (default %(default)s)")
    p.add_argument("--shift-m", type=float, default=0.03,
                   help="depth added along every ray for the 'shifted' rows (default %(default)s m)")
    p.add_argument("--frames", type=int, default=None, help="use N frames evenly spread over the split (default all)")
    p.add_argument("--depth-gate", type=float, default=PoseConfig.depth_gate, help="PoseConfig.depth_gate of joint")
    p.add_argument("--dsac-score", choices=DSAC_SCORES, default=None,
                   help="hypothesis score of dsac/softam (default: the map's DSAC stage's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"rgb", "rgbd"}:
        p.error("--modes takes rgb and/or rgbd")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    the_map = Map.load(args.map, device=args.device)
    frames = subsample(load_scene(args.data).frames(args.split), args.frames)
    start = time.time()
    results = run(the_map, frames, methods, variants(modes, args.shift_px, args.shift_m), args.shift_px,
                  args.shift_m, PoseConfig(depth_gate=args.depth_gate, dsac_score=args.dsac_score), args.seed)
    text, rows = table(results, [f.pose for f in frames])
    print(f"{args.map} on {args.data} ({args.split}, {len(frames)} frames; shifted depth: {args.shift_px} px, "
          f"+{args.shift_m} m; {time.time() - start:.0f} s)\n")
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
