"""The pose calibration's held-out frames: which mapping frames the second head leaves out decides
whether its probabilities match the map's test queries (issue: within 10 points per bin).

Fills the default map's buffer once, then per row trains the held-out head without the row's frames,
fits the calibration on them and scores it on the test poses of ``--poses-rgb`` / ``--poses-rgbd``
(pose files written by ``sceneloc evaluate`` with the same map).

Usage:
    python benchmarks/bench_calibration.py --data ../shared/data/7scenes-redkitchen \\
        --poses-rgb REPORT_RGB/poses.txt --poses-rgbd REPORT_RGBD/poses.txt [--minutes 0.5 1.0] [--blocks 30 60]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from sceneloc.data.dataset import load_scene
from sceneloc.geometry import read_pose_file
from sceneloc.mapping.build import calibrate_with_held_out_head, calibration_group, map_config
from sceneloc.nets.models import EncoderHeadNet, build_coordinate_network
from sceneloc.pose.calibration import error_ratio, reliability_bins
from sceneloc.report.evaluation import pose_error_arrays
from sceneloc.training.buffer import entries_for_memory, fill_buffer
from sceneloc.training.trainers import MappingConfig


def blocks(frames: list, size: int = 30, every: int = 4) -> np.ndarray:
    """Indices of every ``every``-th block of ``size`` consecutive frames of each recording."""
    count: dict[str, int] = {}
    out = []
    for i, f in enumerate(frames):
        seq = Path(f.name).parts[0]
        k = count.get(seq, 0)
        count[seq] = k + 1
        if (k // size) % every == 1:
            out.append(i)
    return np.array(out)


def test_poses(path: str, frames: dict) -> tuple[np.ndarray, np.ndarray]:
    """Inlier counts and error ratios of a pose file's frames (failures: 0 and inf)."""
    records = read_pose_file(path)
    rot, trans = pose_error_arrays([r.pose for r in records], [frames[r.image].pose for r in records])
    inliers = np.array([0 if r.pose is None else r.extras["inliers"] for r in records])
    return inliers, error_ratio(rot, trans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--poses-rgb", required=True)
    ap.add_argument("--poses-rgbd", required=True)
    ap.add_argument("--minutes", type=float, nargs="*", default=[0.5, 1.0], help="held-out head minutes per row")
    ap.add_argument("--blocks", type=int, nargs="*", default=[30],
                    help="rows holding out every 4th block of this many consecutive frames of each recording")
    args = ap.parse_args()
    scene = load_scene(args.data)
    train = scene.frames("train")
    test = {f.name: f for f in scene.frames("test")}
    cfg = MappingConfig().resolved()
    assert cfg.input_height is not None and cfg.aug_scale is not None
    config, norm = map_config(cfg, scene.statistics(), train)
    model = build_coordinate_network(config["network"])
    assert isinstance(model, EncoderHeadNet)
    model.precision = cfg.precision
    buffer = fill_buffer(train, model, cfg.input_height, entries_for_memory(cfg.buffer_mb, model.encoder.channels),
                         cfg.buffer_copies, cfg.seed, cfg.aug_scale, cfg.aug_rotation_deg, cfg.aug_brightness,
                         cfg.aug_contrast, "cpu")
    queries = {"rgb": test_poses(args.poses_rgb, test), "rgbd": test_poses(args.poses_rgbd, test)}
    print("| held out | minutes | mode | held-out / test within 5 cm / 5 deg | max bin error (>= 20 frames) | bins "
          "(frames: predicted / observed %) |\n|---|---|---|---|---|---|")
    groups = [("last recording (default)", calibration_group(train))]
    groups += [(f"blocks of {size}", blocks(train, size)) for size in args.blocks]
    for label, group in groups:
        for minutes in args.minutes:
            cal = calibrate_with_held_out_head(config, norm, buffer, train, replace(cfg, calibration_minutes=minutes),
                                               "cpu", log=lambda *a: None, group=group)
            assert cal is not None
            for mode, (inliers, errors) in queries.items():
                p = np.array([cal.probability(mode, cal.settings, i, 4800, i > 0) for i in inliers])
                ok = errors < 1
                bins = [b for b in reliability_bins(p, ok) if b["frames"]]
                worst = max((abs(b["predicted"] - b["observed"]) * 100 for b in bins if b["frames"] >= 20),
                            default=math.nan)
                shown = " ".join(f"{b['frames']}: {100 * b['predicted']:.0f}/{100 * b['observed']:.0f}" for b in bins)
                print(f"| {label} | {minutes:g} | {mode} | {100 * cal.modes[mode].success_rate:.0f} % / "
                      f"{100 * ok.mean():.0f} % | {worst:.1f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
