"""`make bench` (about 20 min on 2 cores, then six maps for the folds): sceneloc beside its peers on
redkitchen and the default synthetic room (bench_peers.py, which writes its docs/results.md section), and
on three folds x two ground truths (bench_folds.py, which writes its docs/accuracy.md section).
`make bench-all` (``--all``, about 3 h) adds the studies behind the other sections: rendering speed,
accuracy against minutes, the U-Net, Table I, the DSAC stages and the pose table. They train on the
real data in ../shared/data: run them alone on the machine, since concurrent torch processes
oversubscribe a small CPU.

The minutes and pose-table studies print their tables (written into docs/results.md by hand with
their commands, since they combine runs); the other sections are written directly.

Usage: python benchmarks/run_all.py [--data ../shared/data/7scenes-redkitchen] [--runs runs] [--all]
                                    [--with-unet-losses]
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
    ap.add_argument("--all", action="store_true", help="also every study behind the other sections (about 3 h)")
    ap.add_argument("--with-unet-losses", action="store_true", help="with --all: the U-Net loss comparison (30 min)")
    args = ap.parse_args()
    if not (Path(args.data) / "TrainSplit.txt").exists():
        sys.exit(f"benchmarks need the real data: {args.data} not found")
    py, runs, d = sys.executable, args.runs, args.data
    sceneloc = [py, "-m", "sceneloc.cli"]
    table1 = [(name, f"{runs}/table1_{name}", loss) for name, loss in (("l1", "l1"), ("tukey", "tukey"),
                                                                       ("smooth", "tukey+smooth"))]
    peers = [py, str(HERE / "bench_peers.py"), "--data", d, "synth", "--work", f"{runs}/peers",
             "--out", str(HERE / "results"), "--write", "docs/results.md"]
    # three folds x two ground truths, the SIFT peer beside each (six maps: about 40 min more)
    folds = [py, str(HERE / "bench_folds.py"), "--work", f"{runs}/folds", "--json",
             str(HERE / "results" / "bench_folds.json"), "--write", "docs/accuracy.md"]
    if not args.all:
        return run([peers, folds])
    steps = [
        [py, str(HERE / "bench_synth.py")],
        # accuracy against minutes: the default map (snapshots) and the paper's U-Net
        [py, str(HERE / "bench_minutes.py"), "--data", d, "--runs", f"{runs}/final", "--configs", "default=",
         "--minutes", "16", "--snapshots", "2", "5", "10"],
        [py, str(HERE / "bench_minutes.py"), "--data", d, "--runs", f"{runs}/final_unet", "--configs",
         "unet=--arch unet", "--minutes", "10", "--snapshots", "2", "5"],
        [*sceneloc, "map", d, f"{runs}/final/default", "--stage", "confidence", "--confidence-mode", "both", "--force"],
        # paper Table I at equal budget: three losses (400 steps of the 2-block FCN, as in the ablation)
        *[[*sceneloc, "map", d, path, "--force", "--blocks", "2", "--loss", loss, "--iterations", "400",
           "--no-confidence"] for _, path, loss in table1],
        [*sceneloc, "map", d, f"{runs}/table1_l1", "--stage", "confidence"],
    ]
    for mode in ("rgb", "rgbd"):  # DSAC stages on copies of the default map
        steps += [[py, "-c", "import shutil,sys; shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True, "
                   "ignore=shutil.ignore_patterns('checkpoint.pt', 'snapshots', 'report_*'))",
                   f"{runs}/final/default", f"{runs}/final/dsac_{mode}"],
                  [*sceneloc, "map", d, f"{runs}/final/dsac_{mode}", "--stage", "dsac", "--mode", mode,
                   "--minutes", "4", "--force"]]
    steps += [
        [py, str(HERE / "bench_pose_table.py"), "--data", d, "--maps",
         *[f"{name}={path}" for name, path, _ in table1], f"confidence={runs}/table1_l1",
         f"default={runs}/final/default", f"dsac_rgb={runs}/final/dsac_rgb", f"dsac_rgbd={runs}/final/dsac_rgbd",
         "--full", "default"],
    ]
    steps += [peers, folds]
    if args.with_unet_losses:  # the U-Net loss comparison (3 x 10 min)
        steps.append([py, str(HERE / "bench_mapping.py"), "--data", d, "--runs", runs, "--run",
                      "--write", "docs/results.md"])
    run(steps)


def run(steps: list[list[str]]) -> None:
    for cmd in steps:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
