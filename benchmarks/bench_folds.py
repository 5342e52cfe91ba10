"""Accuracy on three folds x two ground truths: redkitchen's three sequences, each tested from a map of
the other two, with the D-SLAM poses (7-Scenes' ``pose.txt``) and with the SfM pseudo ground truth.

Cells: fold 1 tests seq-01 from seq-02 + 03, fold 2 seq-02 from seq-01 + 03, fold 3 seq-03 from seq-01 + 02;
``dslam`` views are ``resplit.py``'s, ``sfm`` views ``sfm_view.py``'s (mapped AND scored with the SfM poses).
Steps (``--steps``, each skips what its output already holds, so an estimator change is re-scored
without re-mapping and without re-running the network):

* ``views``: the six dataset views (symbolic links) under ``WORK/data``;
* ``maps``: ``sceneloc map`` with a fixed ``--iterations`` step budget (a loaded machine makes the same
  map, only later) under ``WORK/maps``; the SfM cells with ``--pose-camera colour`` (their poses are the
  colour camera's);
* ``cache``: the network's output on every test frame (``WORK/cache/CELL.pkl``; its time is kept);
* ``score``: every test frame localized from the cached output in RGB, RGB-D with the recorded depth
  (and without the scene-view alignment), RGB-D with the recorded depth
  and RGB-D with the depth misregistered (``--shift-px DX DY`` and ``--depth-scale``: a Kinect's
  imperfect colour/depth registration); poses, errors and ms per frame in ``WORK/scores/LABEL/CELL.npz``;
* ``peers``: the SIFT + VLAD peer (``bench_peers.py --methods features``) on the same six views;
* ``table``: the markdown table (and ``--json``), written into ``--write`` under its heading;
* ``agreement``: each ground truth's test poses scored against the other's, carried by the similarity
  fitted on the mapping frames; and how much of each ``--label`` row's error one rigid move of the whole
  test recording takes up (a diagnosis that reads the ground truth).

ms per frame: the cached network pass plus the pose, as ``sceneloc localize`` reports a whole frame.
The mean camera-frame offset is the mean of the estimated camera centre in the true camera's frame
(x right, y down, z forward) over the frames within 10 cm / 10 deg: a systematic error, not noise.

Usage:
    python benchmarks/bench_folds.py --work runs/folds --json benchmarks/results/bench_folds.json \\
        --write docs/accuracy.md
    python benchmarks/bench_folds.py --work runs/folds --steps score table --label no-view --set view_rounds=0
"""

from __future__ import annotations

import argparse
import ast
import json
import pickle
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_estimators import shift_depth
from bench_peers import summarise
from bench_pose_table import replace_section
from resplit import resplit
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import invert_pose, kabsch, make_pose, pose_errors, transform_points
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig
from sceneloc.progress import progress
from sceneloc.report.evaluation import pose_error_arrays, pose_metrics
from sfm_view import agreement, sfm_view

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
REDKITCHEN = DATA / "7scenes-redkitchen"
SFM_PGT = DATA / "7scenes-redkitchen-sfm-pgt" / "poses_sfm_pgt.txt"
HEADING = "## Three folds x two ground truths"
#: fold -> (mapping sequences, test sequence)
FOLDS = {1: ((2, 3), 1), 2: ((1, 3), 2), 3: ((1, 2), 3)}
GROUND_TRUTHS = ("dslam", "sfm")
#: ``sfms`` (``--gts``, a study, not in the table by default): the SfM poses with the camera positions
#: scaled by the similarity between both ground truths (``sfm_view.py --compare``: the SfM world is
#: 1.86 % larger than D-SLAM's, whose metre is the depth camera's), so the mapping depth agrees with them
SFM_TO_DEPTH_SCALE = 0.9817
#: rgb-noview: the scene-coordinate pose without the scene-view alignment (``view_rounds=0``)
ROWS = ("rgb", "rgb-noview", "rgbd", "rgbd-shifted")
STEPS = ("views", "maps", "cache", "score", "peers", "table", "agreement")


#: the folds and ground truths this run covers (``--folds``, ``--gts``)
SELECTED = {"folds": list(FOLDS), "gts": list(GROUND_TRUTHS)}


def cells() -> list[tuple[int, str]]:
    return [(fold, gt) for fold in SELECTED["folds"] for gt in SELECTED["gts"]]


def cell_name(fold: int, gt: str) -> str:
    return f"{gt}_f{fold}"


def make_views(work: Path) -> None:
    for fold, gt in cells():
        out = work / "data" / cell_name(fold, gt)
        if (out / "TestSplit.txt").exists():
            continue
        train, test = FOLDS[fold]
        if gt == "dslam":
            resplit(REDKITCHEN, out, list(train), [test])
        else:
            sfm_view(REDKITCHEN, SFM_PGT, out, list(train), [test], sfm_scale(gt))


def sfm_scale(gt: str) -> float:
    """The factor on the SfM camera positions of a ground truth: ``sfms`` the depth's metre, ``sfm@X`` X
    (``sfm+S``: 1, the map multiplies the depth by S instead)."""
    return SFM_TO_DEPTH_SCALE if gt == "sfms" else float(gt.split("@", 1)[1]) if "@" in gt else 1.0


def ground_truth(name: str) -> str:
    """``--gts`` entries: dslam, sfm, sfms, sfm@X (the SfM positions times X, a study of the scale) or sfm+S
    (the SfM poses as published, mapped with ``--depth-to-pose-scale S``)."""
    if name in (*GROUND_TRUTHS, "sfms"):
        return name
    try:
        if name.startswith("sfm@") and sfm_scale(name) > 0 or name.startswith("sfm+") and float(name[4:]) > 0:
            return name
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{name}: choose dslam, sfm, sfms, sfm@SCALE or sfm+SCALE")


def make_maps(work: Path, iterations: int) -> None:
    for fold, gt in cells():
        name = cell_name(fold, gt)
        map_dir = work / "maps" / name
        if (map_dir / "config.json").exists():   # written last, by Map.save
            continue
        log = work / "logs" / f"map_{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        # no calibration head and no confidence network: the default estimator reads neither, and
        # they cost a second pass over the mapping frames
        cmd = [sys.executable, "-m", "sceneloc.cli", "map", str(work / "data" / name), str(map_dir),
               "--iterations", str(iterations), "--no-test-eval", "--force", "--no-confidence",
               "--calibration-minutes", "0"]
        if "+" in gt:   # sfm+S: the published SfM poses, the depth multiplied by S at mapping and query time
            cmd += ["--depth-to-pose-scale", gt.split("+", 1)[1]]
        if gt != "dslam":   # the SfM poses are the colour camera's (D-SLAM's the depth camera's: the default)
            cmd += ["--pose-camera", "colour"]
        print(" ".join(cmd), flush=True)
        with log.open("w") as f:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)


def cached_outputs(the_map: Map, frames: list, path: Path) -> list:
    """The network's ``Prediction`` of every frame (timed, without confidences: the default estimator
    reads none), from ``path`` when it exists."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    the_map.predict(frames[0].load_image(), confidence=False)   # warm-up: one-off costs, untimed
    preds = [the_map.predict(f.load_image(), confidence=False) for f in progress(frames, desc="network")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(preds))
    return preds


def score_cell(the_map: Map, frames: list, preds: list, config: PoseConfig, shift_px: tuple[int, int],
               depth_scale: float, seed: int = 0, rows: tuple[str, ...] = ROWS) -> dict[str, np.ndarray]:
    """Poses ``(N, 4, 4)`` (NaN: failed) and ms ``(N,)`` of every frame per row of ``rows``."""
    poses = {row: np.full((len(frames), 4, 4), np.nan) for row in rows}
    ms = {row: np.zeros(len(frames)) for row in rows}
    for i, (frame, pred) in enumerate(progress(list(zip(frames, preds, strict=True)), desc="scoring")):
        image = frame.load_image()
        depth = frame.load_depth(image.shape[:2])
        depths = {"rgb": None, "rgb-noview": None, "rgbd": depth,
                  "rgbd-shifted": shift_depth(depth, shift_px, 0.0, depth_scale)}
        for row in rows:
            d = depths[row]
            cfg = replace(config, view_rounds=0) if row == "rgb-noview" else config
            res = the_map.localize(image, depth=d, intrinsics=frame.K, estimator=cfg,
                                   rng=np.random.default_rng([seed, i]), prediction=pred)
            if res.pose is not None:
                poses[row][i] = res.pose
            ms[row][i] = res.timings["total_ms"]
    return {**{f"pose_{r}": p for r, p in poses.items()}, **{f"ms_{r}": m for r, m in ms.items()}}


def camera_frame_offsets(poses: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N, 3)`` metres: each estimated camera centre in its true camera's frame (NaN where failed)."""
    return np.stack([transform_points(invert_pose(T_gt), T[None, :3, 3])[0] for T, T_gt in zip(poses, gt, strict=True)])


def stored_pose_errors(poses: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (deg) and translation (m) errors ``(N,)`` of poses ``(N, 4, 4)`` as the scores store them
    (NaN: failed, inf there) against ``gt (N, 4, 4)``."""
    return pose_error_arrays([None if np.isnan(T).any() else T for T in poses], list(gt))


def row_metrics(poses: np.ndarray, ms: np.ndarray | None, gt: np.ndarray) -> dict:
    """Accuracy shares, medians, the mean camera-frame offset (frames within 10 cm / 10 deg), ms (None: no
    time, as for a ground truth scored against the other)."""
    rot, trans = stored_pose_errors(poses, gt)
    m = pose_metrics(rot, trans)
    near = (rot < 10) & (trans < 0.10)
    offsets = camera_frame_offsets(poses, gt)[near]
    return {"within_5cm_5deg": m["accuracy"]["5cm_5deg"], "within_2cm_2deg": m["accuracy"]["2cm_2deg"],
            "within_1cm_1deg": m["accuracy"]["1cm_1deg"], "median_cm": 100 * m["median_translation_m"],
            "median_deg": m["median_rotation_deg"], "failures": m["failures"], "frames": m["frames"],
            "offset_cm": (100 * offsets.mean(axis=0)).tolist() if len(offsets) else None,
            "offset_sd_cm": (100 * offsets.std(axis=0)).tolist() if len(offsets) else None,
            "ms_median": None if ms is None else float(np.median(ms)),
            "ms_p95": None if ms is None else float(np.percentile(ms, 95))}


def run_scores(work: Path, label: str, config: PoseConfig, shift_px: tuple[int, int], depth_scale: float,
               frames_every: int, rows: tuple[str, ...] = ROWS) -> None:
    for fold, gt in cells():
        name = cell_name(fold, gt)
        out = work / "scores" / label / f"{name}.npz"
        if out.exists():
            continue
        the_map = Map.load(work / "maps" / name)
        frames = load_scene(work / "data" / name).frames("test")[::frames_every]
        preds = cached_outputs(the_map, frames, work / "cache" / f"{name}_every{frames_every}.pkl")
        t0 = time.time()
        result = score_cell(the_map, frames, preds, config, shift_px, depth_scale, rows=rows)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, gt=np.stack([f.pose for f in frames]), **result)
        print(f"{label} {name}: {len(frames)} frames scored in {time.time() - t0:.0f} s", flush=True)


def run_peers(work: Path) -> None:
    out = work / "peers" / "out"
    if (out / "bench_peers.json").exists():
        return
    cmd = [sys.executable, str(HERE / "bench_peers.py"), "--methods", "features",
           "--work", str(work / "peers" / "work"), "--out", str(out),
           "--data", *[str(work / "data" / cell_name(f, g)) for f, g in cells()]]
    subprocess.run(cmd, check=True)


def peer_rows(work: Path, every: int) -> dict[tuple[str, str], dict]:
    """(cell, mode) -> the SIFT + VLAD peer on every ``every``-th test frame (as sceneloc is scored),
    summarised from the per-frame results bench_peers leaves under its work folder (empty where not run)."""
    out = {}
    for fold, gt in cells():
        result = work / "peers" / "work" / cell_name(fold, gt) / "features-sift-localize.result.json"
        if result.exists():
            for mode, records in json.loads(result.read_text())["records"].items():
                out[(cell_name(fold, gt), mode)] = summarise(records[::every])
    return out


def collect(work: Path, label: str, every: int) -> list[dict]:
    peers = peer_rows(work, every)
    rows = []
    for fold, gt in cells():
        name = cell_name(fold, gt)
        path = work / "scores" / label / f"{name}.npz"
        if not path.exists():
            continue
        z = np.load(path)
        for row in [r for r in ROWS if f"pose_{r}" in z]:
            peer = peers.get((name, row), {})
            sift_m = peer.get("median_trans_m")
            rows.append({"fold": fold, "ground_truth": gt, "row": row, "label": label,
                         **row_metrics(z[f"pose_{row}"], z[f"ms_{row}"], z["gt"]),
                         "sift_within_5cm_5deg": peer.get("within_5cm_5deg"),
                         "sift_median_cm": None if sift_m is None else 100 * sift_m})
    return rows


def disagreement(work: Path, label: str) -> str:
    """Markdown: how far each frame's RGB-D pose (recorded and misregistered depth) lies from its RGB
    pose, median and 90th percentile: can that disagreement tell misregistered depth apart?"""
    lines = ["| cell | depth | rotation median / p90 deg | translation median / p90 cm |", "|---|---|---:|---:|"]
    for fold, gt in cells():
        path = work / "scores" / label / f"{cell_name(fold, gt)}.npz"
        if not path.exists():
            continue
        z = np.load(path)
        if "pose_rgb" not in z:
            continue
        for row in ("rgbd", "rgbd-shifted"):
            both = [(a, b) for a, b in zip(z["pose_rgb"], z[f"pose_{row}"], strict=True)
                    if not (np.isnan(a).any() or np.isnan(b).any())]
            rot, trans = np.array([pose_errors(a, b) for a, b in both]).T
            lines.append(f"| {cell_name(fold, gt)} | {row} | {np.median(rot):.2f} / {np.percentile(rot, 90):.2f} "
                         f"| {100 * np.median(trans):.1f} / {100 * np.percentile(trans, 90):.1f} |")
    return "\n".join(lines) + "\n"


def agreement_table(work: Path, every: int) -> str:
    """Markdown: each ground truth scored against the other on the test frames, through the similarity
    fitted on the mapping frames (``sfm_view.agreement``): the best a localizer consistent with one can
    score under the other."""
    lines = ["| fold (test) | estimate | scored by | 5 cm / 5 deg | 2 cm / 2 deg | 1 cm / 1 deg | median cm / deg "
             "| mean camera-frame offset (x, y, z) cm |", "|---|---|---|---:|---:|---:|---:|---|"]
    for fold in SELECTED["folds"]:
        pairs = agreement(work / "data" / cell_name(fold, "dslam"), work / "data" / cell_name(fold, "sfm"))
        for key, (estimates, truths) in pairs.items():
            r = row_metrics(estimates[::every], None, truths[::every])
            what, by = ("SfM pose (colour camera)", "D-SLAM") if key == "sfm_vs_dslam" else \
                ("D-SLAM pose (depth camera)", "SfM")
            off = "(" + ", ".join(f"{v:+.1f}" for v in r["offset_cm"]) + ")" if r["offset_cm"] else "-"
            lines.append(f"| {fold} (seq-{FOLDS[fold][1]:02d}) | {what} | {by} | {_pct(r['within_5cm_5deg'])} "
                         f"| {_pct(r['within_2cm_2deg'])} | {_pct(r['within_1cm_1deg'])} "
                         f"| {r['median_cm']:.1f} / {r['median_deg']:.2f} | {off} |")
    return "\n".join(lines) + "\n"


def camera_marks(T: np.ndarray) -> np.ndarray:
    """``(N, 4, 3)`` points of camera-to-world poses ``T (N, 4, 4)``: each centre and 1 m along each axis."""
    return T[:, None, :3, 3] + np.concatenate([np.zeros((len(T), 1, 3)), T[:, :3, :3].transpose(0, 2, 1)], axis=1)


def recording_moves(work: Path, label: str) -> str:
    """Markdown: how much of each row's error is one rigid move of the whole test recording (a diagnosis
    that reads the ground truth, not an estimator): the move that best carries the estimates within
    10 cm / 10 deg onto their true poses (camera centres and points 1 m along each camera axis, Kabsch),
    and the accuracy once every estimate is moved by it."""
    lines = ["| cell | row | 5 cm / 5 deg | after one move of the recording | median cm / deg | after "
             "| the move: turn deg, camera centres moved cm (median) |", "|---|---|---:|---:|---:|---:|---:|"]
    for fold, gt in cells():
        path = work / "scores" / label / f"{cell_name(fold, gt)}.npz"
        if not path.exists():
            continue
        z = np.load(path)
        for row in [r for r in ("rgb", "rgbd") if f"pose_{r}" in z]:
            poses, truth = z[f"pose_{row}"], z["gt"]
            rot, trans = stored_pose_errors(poses, truth)
            near = (rot < 10) & (trans < 0.10)
            if near.sum() < 3:
                continue
            src, dst = (camera_marks(T[near]).reshape(-1, 3) for T in (poses, truth))
            move = make_pose(*kabsch(src, dst))
            # a failed frame (NaN) stays failed: NaN carries through the product
            before, after = row_metrics(poses, None, truth), row_metrics(move @ poses, None, truth)
            turned = pose_errors(move, np.eye(4))[0]
            centres = truth[:, :3, 3]
            shifted = np.median(np.linalg.norm(transform_points(move, centres) - centres, axis=1))
            lines.append(f"| {cell_name(fold, gt)} | {row} | {_pct(before['within_5cm_5deg'])} "
                         f"| {_pct(after['within_5cm_5deg'])} | {before['median_cm']:.1f} / {before['median_deg']:.2f} "
                         f"| {after['median_cm']:.1f} / {after['median_deg']:.2f} "
                         f"| {turned:.2f}, {100 * shifted:.1f} |")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def markdown(rows: list[dict], header: str) -> str:
    lines = [HEADING, "", header, "",
             "| fold (test) | GT | row | 5 cm / 5 deg | 2 cm / 2 deg | 1 cm / 1 deg | median cm / deg "
             "| mean camera-frame offset (x, y, z) cm | ms median / p95 | SIFT + VLAD 5 cm / 5 deg (median cm) |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        off = "-" if r["offset_cm"] is None else "(" + ", ".join(f"{v:+.1f}" for v in r["offset_cm"]) + ")"
        sift = "-" if r["sift_within_5cm_5deg"] is None else \
            f"{_pct(r['sift_within_5cm_5deg'])} ({r['sift_median_cm'] or float('nan'):.1f})"
        lines.append(f"| {r['fold']} (seq-{FOLDS[r['fold']][1]:02d}) | {r['ground_truth']} | {r['row']} "
                     f"| {_pct(r['within_5cm_5deg'])} | {_pct(r['within_2cm_2deg'])} | {_pct(r['within_1cm_1deg'])} "
                     f"| {r['median_cm']:.1f} / {r['median_deg']:.2f} | {off} "
                     f"| {r['ms_median']:.0f} / {r['ms_p95']:.0f} | {sift} |")
    return "\n".join(lines) + "\n"


def parse_settings(items: list[str]) -> dict:
    """``key=value`` PoseConfig overrides (values as Python literals: ``view_rounds=0``)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = ast.literal_eval(value)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="views, maps, caches and scores go here")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    ap.add_argument("--folds", type=int, nargs="+", default=list(FOLDS), choices=list(FOLDS))
    ap.add_argument("--gts", nargs="+", default=list(GROUND_TRUTHS), type=ground_truth,
                    help="ground truths (default dslam sfm; sfms: the SfM poses scaled to the depth's metre; "
                         "sfm@X: the SfM camera positions times X; sfm+S: mapped with --depth-to-pose-scale S)")
    ap.add_argument("--iterations", type=int, default=8000, help="head steps of every map (default %(default)s)")
    ap.add_argument("--label", default="default", help="name of this estimator setting's scores")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="PoseConfig overrides")
    ap.add_argument("--shift-px", type=int, nargs=2, default=(6, 10), metavar=("DX", "DY"),
                    help="misregistered depth: moved right and down (default 6 10)")
    ap.add_argument("--depth-scale", type=float, default=1.02, help="misregistered depth: scaled (default 1.02)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows to score (default all)")
    ap.add_argument("--every", type=int, default=1, help="score every Nth test frame (default all)")
    ap.add_argument("--json", type=Path, help="write the table's rows here")
    ap.add_argument("--write", type=Path, help="replace the table's section in this markdown file")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    SELECTED.update(folds=args.folds, gts=args.gts)
    config = PoseConfig(**parse_settings(args.set))
    if "views" in args.steps:
        make_views(work)
    if "maps" in args.steps:
        make_maps(work, args.iterations)
    if "cache" in args.steps or "score" in args.steps:
        run_scores(work, args.label, config, tuple(args.shift_px), args.depth_scale, args.every, tuple(args.rows))
    if "peers" in args.steps:
        run_peers(work)
    if "table" in args.steps:
        rows = collect(work, args.label, args.every)
        header = (f"`python benchmarks/bench_folds.py {' '.join(sys.argv[1:]) if argv is None else ' '.join(argv)}`; "
                  f"estimator `{args.label}` ({', '.join(args.set) or 'defaults'}); maps of {args.iterations} head "
                  f"steps; misregistered depth moved ({args.shift_px[0]}, {args.shift_px[1]}) px and scaled "
                  f"{args.depth_scale}; every {args.every} test frame(s).")
        md = markdown(rows, header)
        print(md)
        print("RGB-D against RGB poses of the same frames:\n")
        print(disagreement(work, args.label))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"command": header, "rows": rows}, indent=1))
        if args.write:
            replace_section(args.write, HEADING, md)
    if "agreement" in args.steps:
        print("Each ground truth scored against the other (similarity fitted on the mapping frames):\n")
        print(agreement_table(work, args.every))
        print(f"Estimates of `{args.label}` against one rigid move of each test recording:\n")
        print(recording_moves(work, args.label))


if __name__ == "__main__":
    main()
