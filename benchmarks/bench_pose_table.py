"""Paper Table I (+ the full estimator) on a real scene: one command, one docs/results.md section.

Rows: P_1 (l1 map), P_tukey, P_smooth (random sampling) and P_confidence (a map with its
confidence network); columns: Kabsch (RGB-D) and PnP (RGB) median rotation / translation error, the
inlier share (< 10 cm) of the points the pose was computed from and their spread in the image (mean
standard deviation of their pixel coordinates). Table I's protocol is the paper's: "only one pose
hypothesis without any further refinement" (h_p = 1, N_k = 500, the 10 % most confident). The random
rows are given twice: from 50 random points (as many as P_confidence uses) and from all N_k = 500
(the paper's wording for P_1); P_confidence also with the per-cell selection (``--spread-cells 4``).
Then the full estimator (h_p = 256, 8 refinement rounds, final inlier re-fit) for every map, with the
5 cm / 5 deg share and time per frame, compared with the paper's Kitchen row.

Usage:
    python benchmarks/bench_pose_table.py --data ../shared/data/7scenes-redkitchen \
        --maps l1=runs/rk_unet_l1 tukey=runs/rk_unet_tukey smooth=runs/rk_unet_tukey_smooth \
        [--write docs/results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from sceneloc.data.dataset import load_scene, scene_coordinates_at
from sceneloc.geometry import pose_errors
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.estimate import DSAC_METHODS, PoseConfig
from sceneloc.report.evaluation import pose_metrics

TABLE1 = dict(hypotheses=1, refine_rounds=0, polish=False, min_inliers=0)
# The paper puts its confidence network on its best map (smooth); here it goes on the map named
# ``confidence`` (``--maps confidence=DIR``; by default the smooth map's).
ROWS = [("P_1", "l1", "random"), ("P_1 (500 points)", "l1", "random500"), ("P_tukey", "tukey", "random"),
        ("P_smooth", "smooth", "random"), ("P_confidence", "confidence", "confidence"),
        ("P_confidence (4x4 cells)", "confidence", "confidence-spread"),
        ("P_confidence, CN PointNet", "confidence_cn", "confidence"),
        ("P_confidence, CN PointNet (4x4 cells)", "confidence_cn", "confidence-spread")]
#: Table I estimators: name -> PoseConfig options (random ones need no confidence network).
TABLE1_ESTIMATORS = {"random": dict(method="random"), "random500": dict(method="random", subset_size=500),
                     "confidence": dict(method="confidence"),
                     "confidence-spread": dict(method="confidence", spread_cells=4)}
PAPER_KITCHEN = "RGB 2.7 deg / 5 cm; RGB-D 1.3 deg / 4 cm, 66.4 % within 5 cm / 5 deg"


def run(the_map: Map, frames, configs: dict[str, PoseConfig], seed: int = 0) -> dict:
    """Localize every frame with every (mode, config); the network runs once per frame (a dsac/softam
    config runs its DSAC stage's own network)."""
    out = {key: {"rot": [], "trans": [], "inlier_share": [], "spread": [], "ms": []} for key in configs}
    for i, frame in enumerate(frames):
        image = frame.load_image()
        depth = frame.load_depth(image.shape[:2])
        pred = the_map.predict(image)
        for key, cfg in configs.items():
            mode = key.split("/")[0]
            # a DSAC stage predicts with its own fine-tuned network: the base prediction is not reused there
            res = the_map.localize(image, depth=depth if mode == "rgbd" else None, intrinsics=frame.K,
                                   estimator=cfg, rng=np.random.default_rng([seed, i]),
                                   prediction=None if cfg.method in DSAC_METHODS else pred)
            r = out[key]
            if res.pose is None:
                r["rot"].append(np.inf), r["trans"].append(np.inf)
            else:
                e_r, e_t = pose_errors(res.pose, frame.pose)
                r["rot"].append(float(e_r)), r["trans"].append(float(e_t))
            if res.used is not None and len(res.used):
                r["spread"].append(float(np.std(res.pixels[res.used], axis=0).mean()))
                X, valid = scene_coordinates_at(depth, frame.pose, frame.K, res.pixels[res.used])
                err = np.linalg.norm(res.coords[res.used] - X, axis=1)[valid]
                if err.size:
                    r["inlier_share"].append(float((err < 0.1).mean()))
            r["ms"].append(res.timings["total_ms"])
    summary = {}
    for key, r in out.items():
        m = pose_metrics(np.array(r["rot"]), np.array(r["trans"]))
        summary[key] = {"median_rot_deg": m["median_rotation_deg"], "median_trans_m": m["median_translation_m"],
                        "within_5cm_5deg": m["accuracy"]["5cm_5deg"], "within_10cm_10deg": m["accuracy"]["10cm_10deg"],
                        "inlier_share": float(np.mean(r["inlier_share"])) if r["inlier_share"] else 0.0,
                        "spread_px": float(np.mean(r["spread"])) if r["spread"] else 0.0,
                        "ms_median": float(np.median(r["ms"])), "ms_p95": float(np.percentile(r["ms"], 95)),
                        "failures": m["failures"]}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--maps", nargs="+", required=True,
                    help="name=MAP_DIR; the names l1, tukey, smooth, confidence and confidence_cn (the l1 map "
                         "with a context-normalised PointNet, --confidence-blocks) fill Table I")
    ap.add_argument("--full", nargs="*", default=None,
                    help="map names that also get every full estimator (default: all maps)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--write", help="append/replace the section in this markdown file")
    ap.add_argument("--json", default="benchmarks/results/pose_table.json")
    args = ap.parse_args()
    maps = dict(m.split("=", 1) for m in args.maps)
    if "confidence" not in maps and "smooth" in maps:
        maps["confidence"] = maps["smooth"]
    full = set(maps) if args.full is None else set(args.full)
    frames = load_scene(args.data).frames(args.split)
    results = {}
    t0 = time.time()
    for name, path in maps.items():
        done = next((n for n in results if maps[n] == path), None)
        if done:  # the same map under two names (the default confidence row) is run once
            results[name] = results[done]
            continue
        the_map = Map.load(path)
        aliases = {n for n, p in maps.items() if p == path}
        stage = Path(path) / "dsac_config.json"
        stage_mode = json.loads(stage.read_text())["mode"] if stage.exists() else None
        configs = {}
        for mode in ("rgbd", "rgb"):
            for est, options in TABLE1_ESTIMATORS.items():
                if options["method"] == "random" or the_map.confidence_net is not None:
                    configs[f"{mode}/table1-{est}"] = PoseConfig(**options, **TABLE1)
            if mode == stage_mode:  # a DSAC stage is fine-tuned for one mode: PnP (rgb) or Kabsch (rgbd)
                for method in ("dsac", "softam"):
                    configs[f"{mode}/{method}-finetuned"] = PoseConfig(method=method)
            if not aliases & full:
                continue
            configs[f"{mode}/full-random"] = PoseConfig(method="random")
            if the_map.confidence_net is not None:
                configs[f"{mode}/full-confidence"] = PoseConfig(method="confidence")
                configs[f"{mode}/full-confidence-paper"] = PoseConfig(method="confidence", polish=False)
                configs[f"{mode}/full-confidence-spread"] = PoseConfig(method="confidence", spread_cells=4)
            configs[f"{mode}/ransac"] = PoseConfig(method="ransac")
            configs[f"{mode}/dsac-soft-inliers"] = PoseConfig(method="dsac", dsac_score="soft-inliers")
        print(f"{name}: {path} ({len(frames)} frames, {len(configs)} settings)", flush=True)
        results[name] = run(the_map, frames, configs)
        results[name]["_mapping_report"] = json.loads((Path(path) / "mapping_report.json").read_text())
        if stage_mode:
            results[name]["_dsac"] = {**json.loads(stage.read_text()),
                                      **json.loads((Path(path) / "dsac_report.json").read_text())}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    md = render(results, args, time.time() - t0, full)
    print(md)
    if args.write:
        replace_section(Path(args.write), "## Pose estimation: paper Table I and the full estimator", md)


def _fmt(r: dict) -> str:
    return f"{r['median_rot_deg']:.2f} deg, {100 * r['median_trans_m']:.1f} cm"


def render(results: dict, args, seconds: float, full: set[str] = frozenset()) -> str:
    cmd = "python benchmarks/bench_pose_table.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = ["## Pose estimation: paper Table I and the full estimator", "",
             f"Command: `{cmd}`  ", f"Machine: {platform.machine()} {os.cpu_count()}-core CPU, no GPU; "
             f"date {time.strftime('%Y-%m-%d')}; {seconds / 60:.1f} min; split: {args.split}.", "",
             "Table I protocol (one hypothesis, no refinement: from the 50 most confident of N_k = 500 random "
             "points, or from 50 / 500 random points):", "",
             "| | " + " | ".join(r[0] for r in ROWS) + " |", "|---" * (len(ROWS) + 1) + "|"]
    for label, mode in (("Kabsch", "rgbd"), ("PnP", "rgb")):
        cells = []
        for _, m, method in ROWS:
            r = results.get(m, {}).get(f"{mode}/table1-{method}")
            cells.append(_fmt(r) if r else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, fmt in (("Inliers", lambda r: f"{100 * r['inlier_share']:.1f} %"),
                       ("Spread", lambda r: f"{r['spread_px']:.0f} px")):
        cells = [fmt(r) if (r := results.get(m, {}).get(f"rgbd/table1-{method}")) else "n/a" for _, m, method in ROWS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "The same protocol on the --full maps (inliers and spread of the Kabsch points):", "",
              "| map | estimator | Kabsch | PnP | inliers | spread |", "|---|---|---|---|---|---|"]
    listed = []
    for m, res in results.items():
        if m not in full or "rgbd/table1-confidence" not in res or any(res is other for other in listed):
            continue
        listed.append(res)
        for est in TABLE1_ESTIMATORS:
            r, p = res[f"rgbd/table1-{est}"], res[f"rgb/table1-{est}"]
            lines.append(f"| {m} | {est} | {_fmt(r)} | {_fmt(p)} | {100 * r['inlier_share']:.1f} % | "
                         f"{r['spread_px']:.0f} px |")
    lines += ["",
              f"Full estimators (paper Kitchen: {PAPER_KITCHEN}):", "",
              "| map | mode | estimator | median error | 5cm/5deg | 10cm/10deg | failures | ms/frame (median / p95) |",
              "|---|---|---|---|---|---|---|---|"]
    seen = []
    for m, res in results.items():
        if any(res is other for other in seen):  # an alias of a map already listed
            continue
        seen.append(res)
        for key, r in res.items():
            if key.startswith("_") or "table1" in key:
                continue
            mode, est = key.split("/")
            lines.append(f"| {m} | {mode} | {est} | {_fmt(r)} | {100 * r['within_5cm_5deg']:.1f} % | "
                         f"{100 * r['within_10cm_10deg']:.1f} % | {r['failures']} | "
                         f"{r['ms_median']:.0f} / {r['ms_p95']:.0f} |")
    for m, res in results.items():
        d = res.get("_dsac")
        if d and not any(res is results[n] for n in list(results)[:list(results).index(m)]):
            lines.append(f"\nDSAC stage of `{m}`: `--mode {d['mode']} --score {d['score']}`, "
                         f"{d['hypotheses']} hypotheses, {d['steps']} fine-tuning steps in "
                         f"{d['seconds'] / 60:.1f} min; expected pose loss on "
                         f"{d['frames_evaluated']} training frames {d['initial_expected_loss']:.2f} -> "
                         f"{d['final_expected_loss']:.2f}.")
    return "\n".join(lines) + "\n"


def replace_section(path: Path, heading: str, body: str) -> None:
    """Replace the markdown section starting at ``heading`` (up to the next '## ') or append it."""
    text = path.read_text() if path.exists() else "# sceneloc benchmarks\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip() + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + body + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    main()
