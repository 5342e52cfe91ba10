"""`sceneloc sfm` on real images against ground truth, then map and localize the result.

Takes N evenly spaced redkitchen training frames and M evenly spaced test frames, hides their poses
(a temporary folder of symlinks to the images only), runs `sceneloc sfm` with the frames' depth maps
for the scale (--depth-dir) and the test frames as the test split (--test-list), then

* registered share: registered / given images;
* camera-centre error: the reconstructed centres aligned to ground truth by a similarity (Umeyama)
  and, separately, by a rigid transform after the depth-derived scale (what the metric claim is worth);
* with --map: `sceneloc map` on the SfM dataset and `sceneloc evaluate` of its test split (errors
  against the SfM poses, which are metric by the depth scale).

Fails (exit 1) when the registered share is below 90 % or the median centre error above 5 cm.

Usage:
    python benchmarks/bench_sfm.py --data ../shared/data/7scenes-redkitchen --train 60 --test 20 --out runs/sfm [--map]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sceneloc.capture.sfm import umeyama
from sceneloc.data.dataset import evenly_spaced, load_scene
from sceneloc.geometry import kabsch


def pick(frames: list, n: int) -> list:
    return [frames[i] for i in evenly_spaced(len(frames), n)]


def link_inputs(frames: list, images: Path, depths: Path) -> dict[str, object]:
    """Symlink each frame's image (and depth) under a flat name; returns name -> frame."""
    out = {}
    for f in frames:
        name = f.name.replace("/", "_")                  # seq-01_frame-000000.color.jpg
        os.symlink(f.image_path.resolve(), images / name)
        if f.depth_path is not None:
            os.symlink(f.depth_path.resolve(), depths / (name.split(".color")[0] + ".depth.png"))
        out[name] = f
    return out


def centre_errors(dataset: Path, frames_by_name: dict) -> dict:
    """Align SfM camera centres to ground truth; median/p90 errors (m) for a similarity and for a
    rigid fit after the SfM dataset's own (depth-derived) scale."""
    scene = load_scene(dataset)
    est, gt = [], []
    for split in scene.splits.values():
        for f in split:
            name = Path(f.name).name
            est.append(f.pose[:3, 3])
            gt.append(frames_by_name[name].pose[:3, 3])
    est, gt = np.array(est), np.array(gt)
    s, R, t = umeyama(est, gt)
    e_sim = np.linalg.norm(est @ (s * R).T + t - gt, axis=1)
    R2, t2 = kabsch(est, gt)
    e_rigid = np.linalg.norm(est @ np.asarray(R2).T + np.asarray(t2) - gt, axis=1)
    return {"registered_frames": len(est), "sim3_scale": s, "median_sim3_m": float(np.median(e_sim)),
            "p90_sim3_m": float(np.percentile(e_sim, 90)), "median_rigid_m": float(np.median(e_rigid)),
            "p90_rigid_m": float(np.percentile(e_rigid, 90))}


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a posed RGB-D dataset (7-Scenes layout)")
    ap.add_argument("--train", type=int, default=60, help="training frames given to SfM")
    ap.add_argument("--test", type=int, default=20, help="test frames given to SfM (the dataset's test split)")
    ap.add_argument("--out", required=True, help="folder for the SfM dataset, map and report")
    ap.add_argument("--max-features", type=int, default=2048)
    ap.add_argument("--map", action="store_true", help="also map the SfM dataset and evaluate its test split")
    ap.add_argument("--minutes", type=float, default=0.5, help="mapping budget with --map")
    ap.add_argument("--reuse", action="store_true",
                    help="keep an existing OUT/dataset (same --train/--test) instead of rerunning SfM")
    args = ap.parse_args()
    scene = load_scene(args.data)
    frames = pick(scene.frames("train"), args.train) + (pick(scene.frames("test"), args.test) if args.test else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "sceneloc.cli"]
    result: dict = {"data": args.data, "train_given": args.train, "test_given": args.test}
    with tempfile.TemporaryDirectory() as tmp:
        images, depths = Path(tmp, "images"), Path(tmp, "depth")
        images.mkdir(), depths.mkdir()
        by_name = link_inputs(frames, images, depths)
        test_names = [n for n, f in by_name.items() if f in scene.splits["test"]]
        (Path(tmp) / "test.txt").write_text("\n".join(test_names) + "\n")
        dataset = out / "dataset"
        if args.reuse and (dataset / "import_info.json").is_file():
            print(f"reusing the SfM dataset {dataset}", flush=True)
        else:
            result["sfm_s"] = run([*cli, "sfm", str(images), str(dataset), "--depth-dir", str(depths),
                                   "--max-features", str(args.max_features), "--force"]
                                  + (["--test-list", str(Path(tmp) / "test.txt")] if test_names else []))
        info = json.loads((dataset / "import_info.json").read_text())
    result["registered"] = info["registered"]
    result["given"] = len(frames)
    result["registered_share"] = info["registered"] / len(frames)
    result["timings_s"] = info["timings_s"]
    result.update(centre_errors(dataset, by_name))
    if args.map:
        result["map_s"] = run([*cli, "map", str(dataset), str(out / "map"), "--minutes", str(args.minutes), "--force"])
        result["evaluate_s"] = run([*cli, "evaluate", str(out / "map"), str(dataset), "--split", "test",
                                    "--out", str(out / "report"), "--force", "--quiet"])
        m = json.loads((out / "report" / "metrics.json").read_text())
        kept = ("median_rotation_deg", "median_translation_m", "failures", "frames")
        result["localization"] = {k: m[k] for k in kept}
        result["localization"]["5cm_5deg"] = m["accuracy"]["5cm_5deg"]
    (out / "bench_sfm.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["registered_share"] >= 0.9 and result["median_sim3_m"] <= 0.05
    print(f"{'PASS' if ok else 'FAIL'}: registered {result['registered_share']:.1%} (>= 90 %), "
          f"median centre error after similarity {100 * result['median_sim3_m']:.1f} cm (<= 5 cm)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
