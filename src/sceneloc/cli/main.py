"""Command-line interface: one subcommand per stage; each parses options and calls the library.

Errors the user can fix (:class:`SceneLocError`) print one line and exit with code 2. The options of
the mapping, DSAC and pose stages are made from their config dataclasses' fields (``field_option``):
their defaults are the library's, and tests/test_cli_config.py checks that every field is exposed or
deliberately not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Pose estimation runs many small numpy matrix products: OpenBLAS threads only fight each other
# (and the network's threads) on a small CPU. Set before numpy is imported. Not MKL_NUM_THREADS:
# torch's CPU build reads it and would train on one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from sceneloc import __version__
from sceneloc.cli.batch import add_batch_arguments, check_localize_inputs, localize_batch
from sceneloc.cli.capture import add_capture_commands
from sceneloc.cli.options import (
    INTRINSICS_HELP,
    add_map_arguments,
    add_pose_arguments,
    dsac_config,
    mapping_config,
    pose_config,
)
from sceneloc.cli.scale import add_scale_options
from sceneloc.cli.serve import add_serve_command, add_stream_arguments, localized_stream
from sceneloc.data.dataset import load_scene
from sceneloc.data.readers import dataset_unit, parse_intrinsics, read_depth, read_image
from sceneloc.demo import DEMO_CONFIDENCE_MINUTES, DEMO_MINUTES, run_demo
from sceneloc.errors import SceneLocError
from sceneloc.geometry import PoseRecord, invert_pose, matrix_to_quaternion, write_pose_file
from sceneloc.mapping.build import map_scene, retrain_confidence
from sceneloc.mapping.dsac_training import finetune_dsac
from sceneloc.mapping.scene_map import Map
from sceneloc.report.evaluation import evaluate
from sceneloc.report.export import export_point_cloud
from sceneloc.report.tables import table
from sceneloc.synth.dataset import add_synth_arguments
from sceneloc.synth.scenes import DEMO_PRESET, PRESETS
from sceneloc.validation import check_budget, check_config_budgets


def _cmd_info(args: argparse.Namespace) -> None:
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    scene = load_scene(args.dataset, K)
    unit = dataset_unit(scene.root)
    stats = scene.statistics()
    first = next(f for fr in scene.splits.values() for f in fr)
    K0 = first.K
    print(f"dataset      {scene.root}  ({scene.layout} layout)")
    for split, n in stats.frames.items():
        print(f"{split + ' frames':<12} {n}")
    print(f"image size   {stats.image_size[1]}x{stats.image_size[0]}")
    print(f"intrinsics   fx={K0[0, 0]:.2f} fy={K0[1, 1]:.2f} cx={K0[0, 2]:.2f} cy={K0[1, 2]:.2f}")
    print(f"depth        {'yes' if stats.has_depth else 'no'}, valid share {stats.valid_depth_share:.1%}")
    if first.depth_K is not None and stats.has_depth:
        Kd = first.depth_K
        print(f"depth camera fx={Kd[0, 0]:.2f} fy={Kd[1, 1]:.2f} cx={Kd[0, 2]:.2f} cy={Kd[1, 2]:.2f}: "
              f"depth maps registered onto the image grid as they are read")
    lo, hi = stats.extent_min, stats.extent_max
    print(f"extent ({unit})".ljust(13) + f"x [{lo[0]:.2f}, {hi[0]:.2f}]  y [{lo[1]:.2f}, {hi[1]:.2f}]  "
          f"z [{lo[2]:.2f}, {hi[2]:.2f}]")
    print(f"diameter     {stats.diameter:.2f} {unit}  (Tukey c = {stats.tukey_c:.2f} {unit})")
    said = scene.pose_camera
    print(f"poses        the {said} camera's (pose-camera.txt)" if said else
          "poses        the depth camera's, as sceneloc map takes them without pose-camera.txt or --pose-camera")
    if unit != "m":
        print("units        the poses are in arbitrary SfM units, not metres (import_info.json)")


def _cmd_map(args: argparse.Namespace) -> None:
    check_config_budgets(args)   # every stage's budget, before anything is read or written
    check_budget("--dsac-hypotheses", args.dsac_hypotheses)
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    if args.stage == "dsac":
        if args.resume:
            raise SceneLocError("--resume does not apply to --stage dsac (fine-tuning always starts from the base map)")
        finetune_dsac(args.dataset, args.map_dir, dsac_config(args), force=args.force, device=args.device,
                      intrinsics=K)
        return
    cfg = mapping_config(args)
    if args.stage == "confidence":
        retrain_confidence(args.dataset, args.map_dir, cfg, force=args.force, device=args.device, intrinsics=K)
        return
    map_scene(args.dataset, args.map_dir, cfg, force=args.force, resume=args.resume, device=args.device,
              intrinsics=K, evaluate_test=not args.no_test_eval)


def _cmd_localize(args: argparse.Namespace) -> None:
    check_localize_inputs(args)   # conflicting inputs and an unwritable --out, before the map is loaded
    config = pose_config(args)
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    if args.images:
        localize_batch(args, config, K)
        return
    the_map = Map.load(args.map_dir, device=args.device)
    if args.image:
        image = read_image(Path(args.image))
        depth = read_depth(Path(args.depth), image.shape[:2], args.depth_scale) if args.depth else None
        res = the_map.localize(image, depth=depth, intrinsics=K, estimator=config,
                               rng=np.random.default_rng(args.seed))
        if res.pose is None:
            raise SceneLocError(f"{args.image}: no pose found ({res.failure})")
        T_cw = invert_pose(res.pose)
        np.set_printoptions(precision=6, suppress=True)
        # a colour camera's map: the depth's Kabsch pose starts the image's PnP re-fits
        solver = "PnP" if depth is None else "Kabsch" if the_map.pose_camera == "depth" else "Kabsch, then PnP"
        chance = "" if np.isnan(res.probability) else f", P(within 5 cm / 5 deg) = {res.probability:.2f}"
        offset = "" if depth is None else f", query depth reads {100 * res.depth_offset_m:+.1f} cm along its rays"
        print(f"camera-to-world pose of {args.image} ({solver}, {res.inliers} inliers, "
              f"{res.timings['total_ms']:.0f} ms{chance}{offset}):")
        print(res.pose)
        q = matrix_to_quaternion(T_cw[:3, :3])
        print("pose-file line (world-to-camera qw qx qy qz tx ty tz):")
        print(" ".join([Path(args.image).name, *(f"{v:.6f}" for v in (*q, *T_cw[:3, 3]))]))
        return
    out = Path(args.out)
    frames = load_scene(args.dataset, K).frames(args.split)
    records, failures = [], 0
    for frame, res in localized_stream(the_map, frames, args, config):
        failures += res.pose is None
        records.append(PoseRecord(frame.name, res.pose, res.pose_file_columns(), res.failure))
    write_pose_file(out, records, comment=f"sceneloc localize {args.map_dir} {args.dataset} --split {args.split} "
                                           f"--mode {args.mode} --method {args.method}")
    times = np.array([r.extras["time_ms"] for r in records])
    print(f"{len(records)} frames localized, {failures} failures; time per frame median {np.median(times):.0f} ms, "
          f"p95 {np.percentile(times, 95):.0f} ms; poses written to {out}")
    offsets = [r.extras["depth_offset_m"] for r in records if r.pose is not None]
    if args.mode == "rgbd" and offsets:   # a depth sensor misregistered against the camera shows here
        print(f"query depth reads {100 * float(np.median(offsets)):+.1f} cm along its rays against the map "
              f"(median fitted offset, column depth_offset_m)")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    check_config_budgets(args)   # --seed, --n-k
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    m = evaluate(args.map_dir, args.dataset, args.out, split=args.split, mode=args.mode, top_k=args.top_k,
                 estimator=pose_config(args), poses=args.poses, force=args.force, seed=args.seed,
                 device=args.device, intrinsics=K, progress=not args.quiet, allow_missing=args.allow_missing)
    if "pose_coverage" in m:
        c = m["pose_coverage"]
        print(f"pose file covers {c['listed']} of {c['frames']} frames of the split ({c['share']:.1%})")
    rot, trans = m["median_rotation_deg"], m["median_translation_m"]
    print(f"{m['scene']} {m['split']} ({m['mode']}): median {rot:.2f} deg, {100 * trans:.1f} cm; "
          f"5cm/5deg {m['accuracy']['5cm_5deg']:.1%}, {m['failures']} failures of {m['frames']} frames")
    print(f"report: {args.out}/index.html")


def _add_evaluate_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("map_dir", help="a map written by 'sceneloc map' (or a partitioned map / folder of maps: routed)")
    s.add_argument("dataset", help="dataset root with ground-truth poses (and depth for the coordinate errors)")
    s.add_argument("--split", default="test", help="split to evaluate (default %(default)s)")
    s.add_argument("--mode", choices=["rgb", "rgbd"], default="rgb",
                   help="PnP on RGB, or Kabsch with the frame's depth")
    s.add_argument("--out", required=True, metavar="REPORT_DIR",
                   help="report folder: metrics.json, report.md, index.html, poses.txt, plots")
    s.add_argument("--poses", metavar="POSES.txt", help="evaluate this pose file instead of localizing "
                   "(the network still runs for the correspondence plots)")
    s.add_argument("--allow-missing", action="store_true", help="with --poses: accept a file that misses frames of "
                   "the split (counted as failures) instead of refusing it")
    s.add_argument("--intrinsics", help=INTRINSICS_HELP)
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--force", action="store_true", help="write into a non-empty REPORT_DIR (replaces its report files)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_pose_arguments(s)
    s.set_defaults(func=_cmd_evaluate)


def _cmd_export(args: argparse.Namespace) -> None:
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    n = export_point_cloud(args.map_dir, args.dataset, args.out, split=args.split, min_confidence=args.min_confidence,
                           max_frames=args.max_frames, force=args.force, device=args.device, intrinsics=K,
                           progress=not args.quiet)
    print(f"{n} points written to {args.out}")


def _add_export_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("map_dir", help="a map written by 'sceneloc map'")
    s.add_argument("dataset", help="dataset whose images the map predicts (its --split)")
    s.add_argument("--out", required=True, metavar="MAP.ply", help="binary PLY point cloud to write")
    s.add_argument("--split", default="train", help="frames to predict (default %(default)s)")
    s.add_argument("--min-confidence", type=float, default=0.75,
                   help="keep points above this confidence, when the map has a confidence network "
                        "(default %(default)s)")
    s.add_argument("--max-frames", type=int, default=None, help="at most N evenly spaced frames (default all)")
    s.add_argument("--intrinsics", help=INTRINSICS_HELP)
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--force", action="store_true", help="overwrite --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_export)


def _cmd_demo(args: argparse.Namespace) -> None:
    run_demo(args.out, data=args.data, minutes=args.minutes, force=args.force, device=args.device,
             preset=args.preset)


def _add_demo_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", default="demo_out", help="output folder (default %(default)s)")
    s.add_argument("--preset", choices=list(PRESETS), default=None,
                   help=f"synthetic scene to render (default {DEMO_PRESET}; room and stairs are harder)")
    s.add_argument("--data", metavar="DATASET", help="a real dataset instead of a synthetic scene")
    s.add_argument("--minutes", type=float, default=DEMO_MINUTES,
                   help=f"minutes of stage-1 mapping (default %(default)s); each confidence net trains "
                        f"{DEMO_CONFIDENCE_MINUTES:g} more")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--force", action="store_true",
                   help="replace an earlier run in --out (its rendered scene is reused when it matches)")
    s.set_defaults(func=_cmd_demo)


def _cmd_table(args: argparse.Namespace) -> None:
    print(table(args.reports, args.out, force=args.force), end="")
    if args.out:
        print(f"table written to {args.out}")


def _add_table_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("reports", nargs="+", metavar="REPORT_DIR", help="folders written by 'sceneloc evaluate'")
    s.add_argument("--out", metavar="TABLE.md", help="also write the table to this file")
    s.add_argument("--force", action="store_true", help="overwrite --out")
    s.set_defaults(func=_cmd_table)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneloc", description="Camera relocalization by scene coordinate regression.")
    p.add_argument("--version", action="version", version=f"sceneloc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("info", help="print a dataset's splits, intrinsics, extent and diameter")
    s.add_argument("dataset", help="dataset root (7-Scenes or DSAC*/ACE layout)")
    s.add_argument("--intrinsics", help=INTRINSICS_HELP)
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("map", help="learn a scene map from a dataset's train split")
    add_map_arguments(s)
    s.set_defaults(func=_cmd_map)

    s = sub.add_parser("localize", help="estimate camera poses of a dataset split, of new images (--images) or "
                                        "of one image")
    s.add_argument("map_dir", help="a map written by 'sceneloc map'")
    s.add_argument("dataset", nargs="?", help="dataset root to localize (its --split)")
    s.add_argument("--split", default="test", help="split to localize (default %(default)s)")
    s.add_argument("--mode", choices=["rgb", "rgbd"], default="rgb",
                   help="PnP on RGB, or Kabsch with the frame's depth")
    s.add_argument("--out", help="pose file to write (dataset mode)")
    s.add_argument("--image", help="localize this one image instead of a dataset")
    s.add_argument("--depth", help="with --image: its depth map (uint16 PNG, mm) for Kabsch")
    add_batch_arguments(s)
    s.add_argument("--intrinsics",
                   help="query camera: 'fx,fy,cx,cy' or a 3x3 matrix file (default: the dataset's / the map's)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--force", action="store_true", help="overwrite --out")
    add_pose_arguments(s)
    add_stream_arguments(s)
    s.set_defaults(func=_cmd_localize)

    add_synth_arguments(sub.add_parser("synth", help="render a synthetic posed RGB-D scene in 7-Scenes layout"))
    _add_evaluate_arguments(sub.add_parser("evaluate",
                                           help="localize a split against ground truth: metrics, plots, report"))
    _add_export_arguments(sub.add_parser("export", help="write the learned map as a coloured PLY point cloud"))
    _add_demo_arguments(sub.add_parser("demo", help="synthesise (or take) a scene, map it, evaluate it, show results"))
    _add_table_arguments(sub.add_parser("table", help="one row per evaluated scene plus the average (paper Table II)"))

    add_capture_commands(sub)
    add_serve_command(sub)
    add_scale_options(sub, mapping_config, pose_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()   # here, not at exit: a closed pipe is then handled below
    except SceneLocError as e:
        print(f"sceneloc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sceneloc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader stopped early (`sceneloc info DATA | head`): not an error; point stdout at devnull
        # so that Python's own flush at exit does not print a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
