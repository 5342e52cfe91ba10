"""Tracking against per-frame relocalization on a test split streamed in order (docs/server.md).

For each mode (rgb, rgbd) the split's frames are localized once each from scratch
(``mapping.queries.localize_frames``) and once as a stream (``localize.tracking.track_frames``: each frame
aligned from the previous pose, relocalized when that fails); printed and written as JSON: share within 5 cm / 5 deg
(and 10 cm / 10 deg), median errors, median / p95 ms per frame, failures and the share of tracked frames.

Usage:
    python benchmarks/bench_tracking.py --map MAP --data ../shared/data/7scenes-redkitchen --out tracking.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from sceneloc.data.dataset import load_scene
from sceneloc.localize.tracking import track_frames
from sceneloc.mapping.queries import localize_frames
from sceneloc.mapping.scene_map import Map
from sceneloc.report.evaluation import pose_error_arrays, pose_metrics


def summarise(results: list[tuple[np.ndarray, object]]) -> dict:
    """Accuracy and time of ``(true pose, result)`` pairs."""
    ms = [res.timings["total_ms"] for _, res in results]                 # type: ignore[attr-defined]
    tracked = [bool(getattr(res, "tracked", False)) for _, res in results]
    m = pose_metrics(*pose_error_arrays([res.pose for _, res in results],  # type: ignore[attr-defined]
                                        [T_true for T_true, _ in results]))
    return {"frames": m["frames"], "failures": m["failures"],
            "within_5cm_5deg": m["accuracy"]["5cm_5deg"], "within_10cm_10deg": m["accuracy"]["10cm_10deg"],
            "median_translation_cm": 100 * m["median_translation_m"], "median_rotation_deg": m["median_rotation_deg"],
            "median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(np.mean(ms)), "tracked_share": float(np.mean(tracked))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--modes", nargs="+", default=["rgb", "rgbd"])
    ap.add_argument("--frames", type=int, default=0, help="first N frames of the split only (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    ap.add_argument("--out", help="JSON file to write")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    the_map = Map.load(a.map, device="cpu")
    frames = load_scene(a.data).frames(a.split)
    frames = frames[:a.frames] if a.frames else frames
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    report: dict = {"map": Path(a.map).name, "data": Path(a.data).name, "split": a.split, "commit": commit,
                    "machine": platform.processor() or platform.machine(), "rows": {}}
    for mode in a.modes:
        for how, stream in (("per-frame", localize_frames(the_map, frames, mode, progress=False)),
                            ("tracking", track_frames(the_map, frames, mode, progress=False))):
            s = summarise([(f.pose, r) for f, r in stream])
            report["rows"][f"{mode} {how}"] = s
            print(f"{mode:4s} {how:9s}: {s['within_5cm_5deg']:.1%} within 5 cm / 5 deg "
                  f"({s['within_10cm_10deg']:.1%} 10/10), median {s['median_translation_cm']:.1f} cm "
                  f"{s['median_rotation_deg']:.2f} deg, {s['failures']} failures; ms/frame median "
                  f"{s['median_ms']:.1f}, p95 {s['p95_ms']:.1f}; tracked {s['tracked_share']:.0%}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
