"""`make bench`: every benchmark of benchmarks/ in sequence (each writes its own BENCHMARKS.md section
or prints its table). They train on the real data in ../shared/data and take long: run them alone
on the machine, since concurrent torch processes oversubscribe a small CPU.

Usage: python benchmarks/run_all.py [--data ../shared/data/7scenes-redkitchen] [--runs runs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "7scenes-redkitchen"))
    ap.add_argument("--runs", default="runs")
    args = ap.parse_args()
    if not (Path(args.data) / "TrainSplit.txt").exists():
        sys.exit(f"benchmarks need the real data: {args.data} not found")
    py = sys.executable
    maps = [f"l1={args.runs}/rk_unet_l1", f"tukey={args.runs}/rk_unet_tukey", f"smooth={args.runs}/rk_unet_tukey_smooth"]
    steps = [
        [py, str(HERE / "bench_synth.py")],
        [py, str(HERE / "bench_mapping.py"), "--data", args.data, "--runs", args.runs, "--run", "--write", "BENCHMARKS.md"],
        [py, str(HERE / "bench_pose_table.py"), "--data", args.data, "--maps", *maps, "--write", "BENCHMARKS.md"],
        # sceneloc beside feature matching, PoseNet and other RANSAC backends, on this scene and the synthetic room
        [py, str(HERE / "bench_peers.py"), "--data", args.data, "synth", "--work", f"{args.runs}/peers",
         "--out", str(HERE / "results"), "--write", "BENCHMARKS.md"],
    ]
    for cmd in steps:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
