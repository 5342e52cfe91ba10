"""Accuracy against training minutes, and ablations: one command, one docs/results.md section each.

For every named configuration it runs ``sceneloc map DATA RUNS/NAME <args> --minutes M
--snapshot-minutes ...`` (or reuses the map if it is already there), then evaluates the final map
and each snapshot on the test split: coordinate accuracy (median error, share within 10 cm) and
pose accuracy in RGB-D (Kabsch) and RGB (PnP) with one pose estimator for all (``--method``).

Snapshots are the weights of the same run after m minutes: the learning-rate schedule is the one
of the full budget, so a snapshot is "this run after m minutes", not "a run with an m-minute budget".

Usage:
    python benchmarks/bench_minutes.py --data ../shared/data/7scenes-redkitchen --runs runs/minutes \
        --configs default= unet="--arch unet" --minutes 20 --snapshots 2 5 10 \
        --section "Accuracy against training minutes" --write docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch

from sceneloc.data.dataset import load_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig
from sceneloc.training.frame_cache import FrameCache
from sceneloc.training.trainers import coordinate_accuracy, predict_cache

sys.path.insert(0, str(Path(__file__).parent))
from bench_pose_table import replace_section, run


def train(data: str, map_dir: Path, args: str, minutes: float, snapshots: list[float]) -> None:
    if (map_dir / "coordinates.pt").exists():
        print(f"reusing {map_dir}", flush=True)
        return
    cmd = [sys.executable, "-m", "sceneloc.cli", "map", data, str(map_dir), "--force", "--minutes", str(minutes),
           *shlex.split(args)]
    if snapshots:
        cmd += ["--snapshot-minutes", *map(str, snapshots)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def evaluate_map(the_map: Map, frames, test_cache: FrameCache, method: str, seed: int = 0) -> dict:
    """Test coordinate accuracy and pose accuracy (RGB-D and RGB) of one set of weights."""
    out = {"coords": coordinate_accuracy(predict_cache(the_map.coord_net, the_map.norm, test_cache, the_map.device),
                                         test_cache)}
    poses = run(the_map, frames, {f"{mode}/{method}": PoseConfig(method=method) for mode in ("rgbd", "rgb")}, seed)
    for mode in ("rgbd", "rgb"):
        out[mode] = poses[f"{mode}/{method}"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", default="runs/minutes")
    ap.add_argument("--configs", nargs="+", required=True, help="NAME=ARGS pairs (ARGS for sceneloc map)")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--snapshots", type=float, nargs="*", default=[])
    ap.add_argument("--method", default="random", help="pose estimator for every row (default: random, "
                    "the paper's sampling without confidence, so snapshots need no confidence network)")
    ap.add_argument("--every", type=int, default=1, help="evaluate every n-th test frame")
    ap.add_argument("--section", default="Accuracy against training minutes")
    ap.add_argument("--write", default=None, help="docs/results.md to update")
    ap.add_argument("--render", nargs="+", default=None, metavar="JSON",
                    help="only render these earlier results files (concatenated) into the section")
    args = ap.parse_args()
    if args.render:
        results = {k: v for f in args.render for k, v in json.loads(Path(f).read_text()).items()}
        body = render(results, args, float("nan"), None)
        print(body)
        if args.write:
            replace_section(Path(args.write), args.section, body)
        return
    torch.set_num_threads(os.cpu_count() or 1)

    runs = Path(args.runs)
    scene = load_scene(args.data)
    frames = scene.frames("test")[::args.every]
    results, t_start = {}, time.time()
    for spec in args.configs:
        name, _, map_args = spec.partition("=")
        map_dir = runs / name
        train(args.data, map_dir, map_args, args.minutes, args.snapshots)
        the_map = Map.load(map_dir)
        report = json.loads((map_dir / "mapping_report.json").read_text())
        test_cache = FrameCache.build(frames, the_map.config["input_height"], the_map.coord_net.stride,
                                      the_map.coord_net.multiple, "caching test frames")
        weights = {f"{m:g}": map_dir / "snapshots" / f"coordinates_{m:g}min.pt" for m in args.snapshots}
        weights[f"{report['training']['seconds'] / 60:.1f}"] = map_dir / "coordinates.pt"
        results[name] = {"args": map_args, "command": _command(), "every": args.every,
                         "steps": report["training"]["steps"],
                         "images_per_second": report["training"]["images_per_second"], "points": {}}
        for minutes, path in weights.items():
            if not path.exists():
                continue
            the_map.coord_net.load_state_dict(torch.load(path, map_location=the_map.device, weights_only=True))
            r = evaluate_map(the_map, frames, test_cache, args.method)
            results[name]["points"][minutes] = r
            print(f"{name} @ {minutes} min: {json.dumps(r)}", flush=True)
    out = Path(__file__).parent / "results" / f"bench_minutes_{runs.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    body = render(results, args, time.time() - t_start, len(frames))
    print(body)
    if args.write:
        replace_section(Path(args.write), args.section, body)


def _command() -> str:
    return "python benchmarks/bench_minutes.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def render(results: dict, args, seconds: float, n_frames: int | None) -> str:
    commands = dict.fromkeys(r.get("command", _command()) for r in results.values())
    run = (f"{seconds / 60:.0f} min; {n_frames} test frames; " if n_frames else "")
    lines = [*(f"Command: `{c}`  " for c in commands),
             f"Machine: {platform.machine()} {os.cpu_count()}-core CPU, no GPU; date {time.strftime('%Y-%m-%d')}; "
             f"{run}pose estimator `--method {args.method}` (h_p = 256, 8 refinement rounds, final re-fit on all "
             "inliers).", "",
             "| config | minutes | steps | test coords median / <10 cm | RGB-D median | RGB-D 5cm/5deg (10cm/10deg) "
             "| RGB median | RGB 5cm/5deg (10cm/10deg) | ms/frame RGB-D |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for minutes, r in res["points"].items():
            c, d, g = r["coords"], r["rgbd"], r["rgb"]
            lines.append(
                f"| {name} | {minutes} | {res['steps'] if minutes == list(res['points'])[-1] else ''} "
                f"| {100 * c['median_error_m']:.1f} cm / {c['within_10cm']:.1%} "
                f"| {d['median_rot_deg']:.2f} deg, {100 * d['median_trans_m']:.1f} cm "
                f"| **{d['within_5cm_5deg']:.1%}** ({d['within_10cm_10deg']:.1%}) "
                f"| {g['median_rot_deg']:.2f} deg, {100 * g['median_trans_m']:.1f} cm "
                f"| **{g['within_5cm_5deg']:.1%}** ({g['within_10cm_10deg']:.1%}) | {d['ms_median']:.0f} |")
    lines.append("")
    lines += [f"- `{name}`: `sceneloc map DATA MAP {res['args']}` ({res['images_per_second']} images/s)"
              for name, res in results.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
