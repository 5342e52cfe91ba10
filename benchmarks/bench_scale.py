"""Large spaces: a partitioned map of the multi-room ``floor`` against one head with the same total
head-training steps, routing accuracy, queries from a scene outside the map set, and the wall time of
mapping the partitions with 1 and 2 Ray workers (docs/scale.md).

Steps (each a ``sceneloc`` command, printed before it runs; a map already there is reused):

1. ``sceneloc synth DATA --preset floor ...`` (unless DATA exists);
2. ``sceneloc map DATA RUNS/single --partitions 1 --iterations STEPS ...``: one head;
3. ``sceneloc map DATA RUNS/parts-wW --partitions P --iterations STEPS/P --ray-workers W ...`` for each W
   in ``--workers``: P heads, each a Ray task, the same total steps;
4. every ``--every``-th test frame localized in RGB and RGB-D by the single map and by the partitioned map
   (routed, ``--top-k``): share within 5 cm / 5 deg, medians, per-stage times, and whether the query's
   room (``synth.json``'s ``sequence_rooms``) is among the rooms of its routed partitions;
5. ``--outside`` (a dataset of another scene, e.g. redkitchen): its test frames localized by the
   partitioned map, the share not localized or with probability < 0.1.

Usage:
    python benchmarks/bench_scale.py --data ../scratch/floor --runs ../scratch/scale \
        --outside ../shared/data/7scenes-redkitchen --out ../scratch/scale/results.json
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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from sceneloc.data.dataset import evenly_spaced, load_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.report.evaluation import pose_error_arrays, pose_metrics
from sceneloc.scale.partition import read_layout
from sceneloc.scale.routing import ROUTING_FILE, MapSet

#: mapping options shared by every map of the benchmark (images are 320 x 240: the encoder sees 240 rows)
MAP_ARGS = ["--input-height", "240", "--buffer-mb", "192", "--buffer-copies", "1", "--no-confidence",
            "--no-test-eval"]


def sceneloc(*args: str) -> float:
    """Run one sceneloc command; its wall time in seconds."""
    cmd = [sys.executable, "-m", "sceneloc.cli", *args]
    print("$ sceneloc " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def sequence_rooms(data: Path) -> dict[str, str]:
    return json.loads((data / "synth.json").read_text())["sequence_rooms"]


def pose_summary(poses: list[np.ndarray | None], frames: list, probabilities: list[float]) -> dict:
    """Share within 5 cm / 5 deg (failures count as misses), medians over all frames (failures inf)."""
    m = pose_metrics(*pose_error_arrays(poses, [f.pose for f in frames]))
    return {"frames": m["frames"], "within_5cm_5deg": m["accuracy"]["5cm_5deg"],
            "median_cm": 100 * m["median_translation_m"], "median_deg": m["median_rotation_deg"],
            "failures": m["failures"],
            "median_probability": float(np.nanmedian(probabilities)) if probabilities else float("nan")}


def evaluate(maps: Map | MapSet, frames: list, mode: str, top_k: int, rooms: dict[str, str] | None = None,
             part_rooms: dict[str, set[str]] | None = None) -> dict:
    """Localize ``frames`` in ``mode``; pose accuracy, routing hits (a map set) and per-stage times."""
    poses, probs, routed_hit, top1_hit, stages = [], [], [], [], {}
    for i, f in enumerate(frames):
        image = f.load_image()
        depth = f.load_depth(image.shape[:2]) if mode == "rgbd" else None
        rng = np.random.default_rng([0, i])
        if isinstance(maps, MapSet):
            routed = maps.localize(image, depth, f.K, None, rng, top_k)
            res = routed.result
            if rooms is not None and part_rooms is not None:
                room = rooms[Path(f.name).parts[0]]
                routed_hit.append(any(room in part_rooms[n] for n, _ in routed.routed))
                top1_hit.append(room in part_rooms[routed.routed[0][0]])
            t = routed.timings
            for key in ("descriptor_ms", "retrieval_ms", "total_ms"):
                stages.setdefault(key, []).append(t.get(key, 0.0))
            stages.setdefault("localize_ms", []).append(sum(v for k, v in t.items() if k.startswith("localize_")))
        else:
            res = maps.localize(image, depth, f.K, None, rng)
            stages.setdefault("total_ms", []).append(res.timings["total_ms"])
        poses.append(res.pose)
        probs.append(0.0 if res.pose is None else res.probability)
    out = pose_summary(poses, frames, probs)
    out["probabilities"] = probs
    out["median_stage_ms"] = {k: float(np.median(v)) for k, v in stages.items()}
    if routed_hit:
        out["routed_to_own_room"] = float(np.mean(routed_hit))
        out["top1_own_room"] = float(np.mean(top1_hit))
    return out


def routing_at_k(map_set: MapSet, frames: list, rooms: dict[str, str], part_rooms: dict[str, set[str]],
                 ks: tuple[int, ...] = (1, 2, 3)) -> dict[str, float]:
    """Share of ``frames`` whose own room is among the rooms of their top-k routed partitions, per k
    (retrieval only, no localization)."""
    hits: dict[str, list[bool]] = {f"top{k}": [] for k in ks}
    for f in frames:
        routed, _ = map_set.route(f.load_image(), max(ks))
        room = rooms[Path(f.name).parts[0]]
        for k in ks:
            hits[f"top{k}"].append(any(room in part_rooms[n] for n, _ in routed[:k]))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def routing_other_walks(parts_dir: Path, map_set: MapSet, rooms: dict[str, str], part_rooms: dict[str, set[str]],
                        ks: tuple[int, ...] = (1, 2, 3)) -> dict[str, float]:
    """Routing that does not look at the test walks: each mapping frame's stored descriptor routed against the
    mapping frames of the other walks only (its own walk removed from every partition); share of frames whose
    own room is among the rooms of their top-k partitions, per k."""
    names = {n: [str(x) for x in np.load(parts_dir / n / ROUTING_FILE)["names"]] for n in map_set.references}
    queries: dict[str, np.ndarray] = {}
    for n, frames in names.items():
        for f, d in zip(frames, map_set.centred[n][0], strict=True):
            queries.setdefault(f, d / max(float(np.linalg.norm(d)), 1e-12))
    hits: dict[str, list[bool]] = {f"top{k}": [] for k in ks}
    for f, q in queries.items():
        walk = Path(f).parts[0]
        scores = []
        for n, frames in names.items():
            r, norms = map_set.centred[n]
            keep = np.array([Path(g).parts[0] != walk for g in frames])
            scores.append((float(((r[keep] @ q) / norms[keep]).max()) if keep.any() else -np.inf, n))
        order = [n for _, n in sorted(scores, reverse=True)]
        for k in ks:
            hits[f"top{k}"].append(any(rooms[walk] in part_rooms[n] for n in order[:k]))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the floor dataset (rendered here when absent)")
    p.add_argument("--runs", type=Path, required=True, help="folder for the maps")
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    p.add_argument("--outside", type=Path, help="a dataset of another scene: its test frames must not localize")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--steps", type=int, default=1800, help="total head-training steps of each map")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray workers of the partitioned runs")
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--every", type=int, default=4, help="every N-th test frame is a query")
    p.add_argument("--outside-queries", type=int, default=60)
    p.add_argument("--routing-only", action="store_true", help="print the routing accuracy at k = 1, 2, 3 and stop")
    args = p.parse_args(argv)
    if not args.data.exists():
        sceneloc("synth", str(args.data), "--preset", "floor", "--frames", "40", "--train-sequences", "12",
                 "--test-sequences", "6", "--width", "320", "--height", "240", "--quiet")
    args.runs.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args) | {
                         k: str(v) for k, v in vars(args).items() if isinstance(v, Path)}, "mapping": {}}
    single = args.runs / "single"
    if not (single / "mapping_report.json").exists():
        results["mapping"]["single"] = sceneloc("map", str(args.data), str(single), "--force", "--partitions", "1",
                                                "--iterations", str(args.steps), *MAP_ARGS)
    per_part = args.steps // args.partitions
    for w in args.workers:
        d = args.runs / f"parts-w{w}"
        if not (d / "scale_report.json").exists():
            results["mapping"][f"parts-w{w}"] = sceneloc(
                "map", str(args.data), str(d), "--force", "--partitions", str(args.partitions), "--iterations",
                str(per_part), "--ray-workers", str(w), *MAP_ARGS)
        results["mapping"][f"parts-w{w}-report"] = json.loads((d / "scale_report.json").read_text())
    parts_dir = args.runs / f"parts-w{args.workers[0]}"
    rooms = sequence_rooms(args.data)
    layout, _ = read_layout(parts_dir)
    part_rooms = {p.name: {rooms[Path(n).parts[0]] for n in p.frames} for p in layout}
    results["partition_rooms"] = {k: sorted(v) for k, v in part_rooms.items()}
    test = load_scene(args.data).frames("test")
    queries = [test[i] for i in range(0, len(test), args.every)]
    single_map, map_set = Map.load(single), MapSet.load(parts_dir)
    results["routing_all_test_frames"] = routing_at_k(map_set, test, rooms, part_rooms)
    print(f"routing, all {len(test)} test frames: {results['routing_all_test_frames']}", flush=True)
    results["routing_mapping_frames_other_walks"] = routing_other_walks(parts_dir, map_set, rooms, part_rooms)
    print(f"routing, mapping frames against the other walks' frames: "
          f"{results['routing_mapping_frames_other_walks']}", flush=True)
    if args.routing_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        return results
    for mode in ("rgb", "rgbd"):
        results[f"single_{mode}"] = evaluate(single_map, queries, mode, args.top_k)
        results[f"parts_{mode}"] = evaluate(map_set, queries, mode, args.top_k, rooms, part_rooms)
        for name in ("single", "parts"):
            r = results[f"{name}_{mode}"]
            print(f"{name:6s} {mode:4s}: {r['within_5cm_5deg']:.1%} within 5 cm / 5 deg, median {r['median_cm']:.1f} "
                  f"cm {r['median_deg']:.2f} deg, {r['failures']} failures"
                  + (f"; routed to own room {r['routed_to_own_room']:.1%}" if "routed_to_own_room" in r else ""),
                  flush=True)
    if args.outside:
        out_frames = load_scene(args.outside).frames("test")
        out_frames = [out_frames[i] for i in evenly_spaced(len(out_frames), args.outside_queries)]
        for mode in ("rgb", "rgbd"):
            r = evaluate(map_set, out_frames, mode, args.top_k)
            probs = np.array(r["probabilities"])
            r["rejected"] = float(np.mean(probs < 0.1))   # failures have probability 0
            results[f"outside_{mode}"] = r
            print(f"outside {mode}: {r['rejected']:.1%} not localized or P < 0.1", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
