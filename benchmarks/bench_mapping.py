"""Mapping losses on a real scene (issue: P_l1 vs P_tukey vs P_smooth), one docs/results.md section.

Runs (with --run) or reads (without) one `sceneloc map` per loss with the default budget and
reports the test split's median coordinate error and share of pixels within 10 cm, with the
training throughput, from each map's mapping_report.json.

Usage:
    python benchmarks/bench_mapping.py --data ../shared/data/7scenes-redkitchen --runs runs --run \
        --write docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_pose_table import replace_section

LOSSES = [("l1", "rk_unet_l1", ["--no-confidence"]), ("tukey", "rk_unet_tukey", ["--no-confidence"]),
          ("tukey+smooth", "rk_unet_tukey_smooth", ["--confidence-mode", "both"])]
HEADING = "## Mapping: coordinate accuracy per loss (paper P_l1 / P_tukey / P_smooth)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", default="runs", help="folder holding one map per loss")
    ap.add_argument("--run", action="store_true", help="(re)train the maps; otherwise read existing ones")
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--write", help="markdown file whose section to replace")
    args = ap.parse_args()
    sceneloc = str(Path(sys.executable).parent / "sceneloc")
    rows = []
    for loss, name, extra in LOSSES:
        map_dir = Path(args.runs) / name
        cmd = [sceneloc, "map", args.data, str(map_dir), "--arch", args.arch, "--loss", loss, "--force", *extra]
        if args.run:
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        report = json.loads((map_dir / "mapping_report.json").read_text())
        cfg = json.loads((map_dir / "mapping_config.json").read_text())
        rows.append((loss, report, cfg, " ".join(["sceneloc", *cmd[1:]])))
    md = render(rows, args)
    print(md)
    if args.write:
        replace_section(Path(args.write), HEADING, md)


def render(rows, args) -> str:
    cfg = rows[0][2]
    lines = [HEADING, "",
             f"Command: `python benchmarks/bench_mapping.py --data {args.data} --runs {args.runs} --run` "
             f"(one `sceneloc map DATA MAP --arch {args.arch} --loss LOSS` per row).  ",
             f"Machine: {platform.machine()} {os.cpu_count()}-core CPU, no GPU; date {time.strftime('%Y-%m-%d')}.  ",
             f"Default budget: {cfg['minutes']:g} min of stage-1 training, {cfg['arch']} width "
             f"{cfg['width'] or {'unet': 16, 'fcn': 32}[cfg['arch']]}, "
             f"input height {cfg['input_height']}, batch {cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']:g} "
             f"({cfg['schedule']}), augmentation zoom {cfg['aug_scale']:g}x / roll {cfg['aug_rotation_deg']:g} deg.",
             "",
             "| loss | steps | images/s | train median / <10 cm | **test median / <10 cm** |", "|---|---|---|---|---|"]
    for loss, rep, _, _ in rows:
        tr, te, t = rep["train"], rep.get("test", {}), rep["training"]
        lines.append(f"| {loss} | {t['steps']} | {t['images_per_second']:.1f} | "
                     f"{100 * tr['median_error_m']:.1f} cm / {100 * tr['within_10cm']:.1f} % | "
                     f"**{100 * te.get('median_error_m', float('nan')):.1f} cm / "
                     f"{100 * te.get('within_10cm', float('nan')):.1f} %** |")
    lines += ["", verdict(rows)]
    return "\n".join(lines) + "\n"


def verdict(rows) -> str:
    """Does the paper's ordering (tukey better than l1, smoothing slightly better again) hold here?"""
    test = {loss: rep["test"] for loss, rep, _, _ in rows if "test" in rep}
    if len(test) < 3:
        return ""
    med = {k: v["median_error_m"] for k, v in test.items()}
    share = {k: v["within_10cm"] for k, v in test.items()}
    holds_tukey = med["tukey"] < med["l1"] and share["tukey"] > share["l1"]
    holds_smooth = med["tukey+smooth"] < med["tukey"] and share["tukey+smooth"] > share["tukey"]
    best = max(share, key=share.get)
    return (f"Paper's finding (Tukey better than l1, smoothing slightly better again): tukey vs l1 "
            f"{'holds' if holds_tukey else 'does not hold'}, smoothing {'holds' if holds_smooth else 'does not hold'} "
            f"here; the most test pixels within 10 cm come from `{best}`. With a 10-minute CPU budget every run is "
            f"far from converged (train error still falling), so this ranks early learning speed, not the optimum "
            f"the paper reached after 800 epochs; c = half the diameter (2.6 m) makes Tukey nearly l2 for errors of "
            f"decimetres, and the smoothness term pulls neighbours together before they are right.")


if __name__ == "__main__":
    main()
