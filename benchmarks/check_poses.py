"""Do two versions of sceneloc give a map the same poses? Record the poses of fixed frames, then compare.

A change made for speed must not move poses: run this once with the code before the change
(``--out``), once with the code after it (``--against``), on the same map and frames. Every frame is
localized with the default estimator (or ``--method``) and the per-frame seed of
``mapping.queries.localize_frames``, in RGB and/or RGB-D. The comparison prints, per mode, the largest
difference between the two poses of a frame (mm, degrees), frames where only one side has a pose,
and each side's median ms per frame, and exits 1 when a difference exceeds the tolerance.

Usage:
    PYTHONPATH=BEFORE/src python benchmarks/check_poses.py --map MAP --data DATA --frames 100 --out before.npz
    PYTHONPATH=src python benchmarks/check_poses.py --map MAP --data DATA --frames 100 --against before.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneloc.data.dataset import evenly_spaced, load_scene
from sceneloc.geometry import pose_errors
from sceneloc.mapping.scene_map import Map

NO_POSE = np.full((4, 4), np.nan)


def record(the_map: Map, frames: list, modes: list[str], method: str, seed: int = 0) -> dict[str, np.ndarray]:
    """``pose_<mode>`` ``(F, 4, 4)`` (NaN where no pose), ``ms_<mode>`` ``(F,)`` (``Map.localize``'s
    total: network and pose, wall clock) and ``cpu_ms_<mode>`` ``(F,)`` (CPU time of the calling thread
    in that call: the whole work of a frame where everything runs on one thread, ``--one-thread``)
    of every frame, localized as ``mapping.queries.localize_frames`` does (the same per-frame seeds)."""
    out = {}
    for mode in modes:
        poses, ms, cpu = [], [], []
        for i, frame in enumerate(frames):
            image = frame.load_image()
            depth = frame.load_depth(image.shape[:2]) if mode == "rgbd" else None
            start = time.thread_time()
            res = the_map.localize(image, depth=depth, intrinsics=frame.K, estimator=method,
                                   rng=np.random.default_rng([seed, i]))
            cpu.append(1e3 * (time.thread_time() - start))
            poses.append(NO_POSE if res.pose is None else res.pose)
            ms.append(res.timings["total_ms"])
        out.update({f"pose_{mode}": np.stack(poses), f"ms_{mode}": np.asarray(ms), f"cpu_ms_{mode}": np.asarray(cpu)})
    return out


def differences(before: np.ndarray, after: np.ndarray) -> dict[str, float | int]:
    """Largest translation (mm) and rotation (deg) between the poses ``(F, 4, 4)`` of the same frames, and
    the count of frames where one side has a pose and the other none."""
    none_before, none_after = np.isnan(before).any(axis=(1, 2)), np.isnan(after).any(axis=(1, 2))
    both = ~none_before & ~none_after
    rot, trans = pose_errors(after[both], before[both])
    return {"max_mm": 1000 * float(trans.max(initial=0.0)), "max_deg": float(rot.max(initial=0.0)),
            "one_sided": int((none_before != none_after).sum()), "frames": len(before)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map", required=True, help="map directory")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, default=100, help="frames evenly spread over the split (default %(default)s)")
    p.add_argument("--modes", default="rgb,rgbd", help="comma-separated rgb and/or rgbd (default %(default)s)")
    p.add_argument("--method", default="ransac", help="PoseConfig method (default %(default)s)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="write the poses here (.npz)")
    what.add_argument("--against", help="compare with the poses recorded here (.npz)")
    p.add_argument("--tolerance-mm", type=float, default=1.0)
    p.add_argument("--tolerance-deg", type=float, default=0.01)
    p.add_argument("--one-thread", action="store_true",
                   help="torch and OpenCV on one thread (BLAS is already, in Map.localize): the CPU ms per frame "
                        "are then the whole work, a figure the other jobs of a shared machine barely change")
    args = p.parse_args(argv)
    threads = torch.get_num_threads(), cv2.getNumThreads()
    if args.one_thread:
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
    try:
        return run(args)
    finally:   # a caller in the same process (a test) keeps its thread settings
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def run(args: argparse.Namespace) -> int:
    """Record (``args.out``) or compare (``args.against``); 0, or 1 when the poses differ."""
    modes = [m for m in args.modes.split(",") if m]
    frames = load_scene(args.data).frames(args.split)
    frames = [frames[i] for i in evenly_spaced(len(frames), args.frames)]
    poses = record(Map.load(args.map), frames, modes, args.method)
    if args.out:
        np.savez(args.out, **poses)
        print(f"{args.out}: {len(frames)} frames, " + ", ".join(
            f"{m} {np.median(poses[f'ms_{m}']):.0f} ms median, {np.median(poses[f'cpu_ms_{m}']):.1f} CPU ms median"
            for m in modes))
        return 0
    ok = True
    with np.load(args.against) as before:
        name = Path(args.against).name
        print(f"| mode | frames | max difference mm | max difference deg | one side without a pose "
              f"| ms median {name} / now | CPU ms median {name} / now |\n|---|---:|---:|---:|---:|---:|---:|")
        for m in modes:
            d = differences(before[f"pose_{m}"], poses[f"pose_{m}"])
            print(f"| {m} | {d['frames']} | {d['max_mm']:.3f} | {d['max_deg']:.4f} | {d['one_sided']} "
                  f"| {np.median(before[f'ms_{m}']):.0f} / {np.median(poses[f'ms_{m}']):.0f} "
                  f"| {np.median(before[f'cpu_ms_{m}']):.1f} / {np.median(poses[f'cpu_ms_{m}']):.1f} |")
            ok &= d["max_mm"] < args.tolerance_mm and d["max_deg"] < args.tolerance_deg and not d["one_sided"]
    print("same poses" if ok else f"poses differ beyond {args.tolerance_mm} mm / {args.tolerance_deg} deg")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
