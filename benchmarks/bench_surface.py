"""RGB-D poses aligned to the scene surface (ICP, ``surface/cloud.py``) on one map's cached network output.

The surface is fused from the split's training frames per row setting (voxel, mapping-depth stride);
every row re-estimates all test poses from the same correspondences (``bench_thresholds.py --cache``
format) with the default Kabsch estimator, then aligns the query depth to the surface. Rows run on the
query depth as read and moved as in ``bench_estimators.py`` (``--shift-px`` pixels right and down,
``--shift-m`` further along every ray). ms: the alignment alone (median), one thread.

Usage:
    python benchmarks/bench_surface.py --map MAP_DIR --data DATASET --cache PREDS.pkl \\
        [--rows default voxel=0.015 stride=8 query=16 sigma=0 distances=0.05,0.03,0.02 none]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench_estimators import shift_depth
from bench_thresholds import cached_predictions
from sceneloc.data.dataset import camera_points, load_scene
from sceneloc.pose.estimate import PoseConfig, estimate_pose
from sceneloc.report.evaluation import pose_error_arrays, pose_metrics
from sceneloc.surface import cloud as scene_cloud
from sceneloc.surface.cloud import SceneCloud, align_depth, depth_points

DEFAULTS = {"voxel": scene_cloud.VOXEL_M, "stride": scene_cloud.MAPPING_STRIDE_PX,
            "query": scene_cloud.QUERY_STRIDE_PX, "sigma": PoseConfig.icp_offset_sigma_m,
            "distances": PoseConfig.icp_distances_m, "refit": PoseConfig.depth_offset_sigma_m,
            "gate": 0, "fixed": 0}


def parse_row(spec: str) -> dict:
    """``default``, ``none`` (no alignment) or ``key=value[;key=value]`` over ``DEFAULTS`` (``refit``: the
    Kabsch pose's own depth-offset prior, ``PoseConfig.depth_offset_sigma_m``, 0 = no re-fit; ``gate=1``:
    the ICP fits an offset only where that re-fit kept one)."""
    row = dict(DEFAULTS, name=spec, off=spec == "none")
    for part in () if spec in ("default", "none") else spec.split(";"):
        key, value = part.split("=")
        row[key] = tuple(float(v) for v in value.split(",")) if key == "distances" else \
            (int(value) if key in ("stride", "query", "gate", "fixed") else float(value))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", type=Path, required=True, help="pickle of the network's correspondences")
    ap.add_argument("--rows", nargs="+", default=["none", "default"])
    ap.add_argument("--shift-px", type=int, default=4)
    ap.add_argument("--shift-m", type=float, default=0.03)
    args = ap.parse_args()
    scene = load_scene(args.data)
    frames, train = scene.frames("test"), scene.frames("train")
    preds = cached_predictions(args.map, frames, args.cache)
    depths = {"clean": [f.load_depth() for f in frames]}
    depths["shifted"] = [shift_depth(d, args.shift_px, args.shift_m) for d in depths["clean"]]
    starts: dict[float, dict[str, list]] = {}   # the scene-coordinate poses per Kabsch re-fit prior and depth

    def start_poses(refit: float) -> dict[str, list]:
        if refit not in starts:
            config = PoseConfig(depth_offset_sigma_m=refit)
            starts[refit] = {kind: [estimate_pose(px, X, f.K, camera_points=camera_points(d, px, f.K), config=config,
                                                  rng=np.random.default_rng([0, i]))
                                    for i, (f, (px, X), d) in enumerate(zip(frames, preds, ds, strict=True))]
                             for kind, ds in depths.items()}
        return starts[refit]
    surfels: dict[int, list] = {}
    print(f"`{args.map}` on `{args.data}` (test, {len(frames)} frames)\n")
    print("| row | surface points | clean 5 cm / 5 deg | clean 2 cm / 2 deg | shifted 5 cm / 5 deg | ms median |\n"
          "|---|---:|---:|---:|---:|---:|")
    gt = [f.pose for f in frames]
    for spec in args.rows:
        row = parse_row(spec)
        cloud = None
        if not row["off"]:
            if row["stride"] not in surfels:
                mapping_stride = scene_cloud.scaled_stride(depths["clean"][0].shape[1], row["stride"])
                surfels[row["stride"]] = SceneCloud.frame_surfels(train, mapping_stride)
            cloud = SceneCloud.from_surfels(surfels[row["stride"]], row["voxel"])
            assert cloud is not None
            _ = cloud.tree
        cells, ms = [], []
        for kind, ds in depths.items():
            poses = []
            for f, d, start in zip(frames, ds, start_poses(row["refit"])[kind], strict=True):
                T = start.pose
                if cloud is None or T is None:
                    poses.append(T)
                    continue
                t0 = time.perf_counter()
                stride = scene_cloud.scaled_stride(d.shape[1], row["query"])
                # gate=1: the ICP fits an offset only where the Kabsch re-fit kept one; fixed=1: a rigid
                # ICP of the depth corrected by the Kabsch re-fit's offset
                sigma = 0.0 if row["fixed"] or (row["gate"] and start.depth_offset_m == 0) else row["sigma"]
                offset = start.depth_offset_m if row["fixed"] else 0.0
                fit = align_depth(depth_points(d, f.K, stride), T, cloud, row["distances"], sigma, offset)
                ms.append((time.perf_counter() - t0) * 1e3)
                poses.append(T if fit is None else fit.pose)
            acc = pose_metrics(*pose_error_arrays(poses, gt))["accuracy"]
            cells.append(f"{100 * acc['5cm_5deg']:.1f} %")
            if kind == "clean":
                cells.append(f"{100 * acc['2cm_2deg']:.1f} %")
        points = "-" if cloud is None else f"{len(cloud.points) / 1e3:.0f} k"
        median = f"{np.median(ms):.1f}" if ms else "-"
        print(f"| {spec} | {points} | {' | '.join(cells)} | {median} |", flush=True)


if __name__ == "__main__":
    main()
