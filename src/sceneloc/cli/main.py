"""Command-line interface: one subcommand per stage; each parses options and calls the library.

Errors the user can fix (:class:`SceneLocError`) print one line and exit with code 2. The options of
the mapping, DSAC and pose stages are made from their config dataclasses' fields (``_field_option``):
their defaults are the library's, and tests/test_cli_config.py checks that every field is exposed or
deliberately not.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

# Pose estimation runs many small numpy matrix products: OpenBLAS threads only fight each other
# (and the network's threads) on a small CPU. Set before numpy is imported. Not MKL_NUM_THREADS:
# torch's CPU build reads it and would train on one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from sceneloc import __version__
from sceneloc.cli.batch import add_batch_arguments, check_localize_inputs, localize_batch
from sceneloc.cli.capture import add_capture_commands
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
from sceneloc.nets.encoders import PRECISIONS
from sceneloc.nets.losses import COORDINATE_LOSSES, NEIGHBOURHOODS
from sceneloc.nets.models import FCN_STEMS, FCN_STRIDES
from sceneloc.pose.config import DSAC_SCORES, METHODS, PoseConfig
from sceneloc.pose.config import SCORES as POSE_SCORES
from sceneloc.pose.dsac import MODES, OBJECTIVES, DSACConfig
from sceneloc.report.evaluation import evaluate
from sceneloc.report.export import export_point_cloud
from sceneloc.report.tables import table
from sceneloc.synth.dataset import add_synth_arguments
from sceneloc.synth.scenes import DEMO_PRESET, PRESETS
from sceneloc.training.head import LOSSES as HEAD_LOSSES
from sceneloc.training.loop import SCHEDULES
from sceneloc.training.trainers import (
    ARCH_DEFAULTS,
    CONFIDENCE_MODES,
    DEFAULT_WIDTH,
    OPTIMIZERS,
    MappingConfig,
)
from sceneloc.validation import check_budget, check_config_budgets

#: Stage-1 options that --stage dsac also reads (None: DSACConfig's default); its own options are dsac_<field>.
DSAC_SHARED_OPTIONS = ("minutes", "iterations", "seed")
#: PoseConfig.pnp_method values offered: the solvers that take many points (p3p takes exactly 4).
PNP_CHOICES = ("epnp", "sqpnp")
INTRINSICS_HELP = ("override: 'fx,fy,cx,cy' or a file with a 3x3 matrix, the camera of the images and of "
                   "their depth maps alike (no registration)")


def _field_option(group: Any, config: object, name: str, help: str = "", *, flag: str | None = None,
                  aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
    """``--name`` (dashes for underscores, or ``flag``) for the field ``name`` of the dataclass instance
    ``config``: the field's name as dest (unless given), its default, the type of its default (unless
    given) and, for a number or a word, that default at the end of the help. ``aliases``: older spellings
    that still work (options before they carried their unit)."""
    kwargs.setdefault("dest", name)
    default = getattr(config, name)
    shown = isinstance(default, int | float | str) and not isinstance(default, bool)
    if shown:
        kwargs.setdefault("type", type(default))
    if shown and "%(default)" not in help:
        help = f"{help} (default %(default)s)" if help else "default %(default)s"
    group.add_argument(flag or "--" + name.replace("_", "-"), *aliases, default=default, help=help, **kwargs)


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
    if unit != "m":
        print("units        the poses are in arbitrary SfM units, not metres (import_info.json)")


def _cmd_map(args: argparse.Namespace) -> None:
    check_config_budgets(args)   # every stage's budget, before anything is read or written
    check_budget("--dsac-hypotheses", args.dsac_hypotheses)
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    if args.stage == "dsac":
        if args.resume:
            raise SceneLocError("--resume does not apply to --stage dsac (fine-tuning always starts from the base map)")
        finetune_dsac(args.dataset, args.map_dir, _dsac_config(args), force=args.force, device=args.device,
                      intrinsics=K)
        return
    cfg = _mapping_config(args)
    if args.stage == "confidence":
        retrain_confidence(args.dataset, args.map_dir, cfg, force=args.force, device=args.device, intrinsics=K)
        return
    map_scene(args.dataset, args.map_dir, cfg, force=args.force, resume=args.resume, device=args.device,
              intrinsics=K, evaluate_test=not args.no_test_eval)


def _mapping_config(args: argparse.Namespace) -> MappingConfig:
    """The stage-1 and stage-2 options, whose dests are MappingConfig's field names."""
    return MappingConfig(**{f.name: getattr(args, f.name) for f in fields(MappingConfig) if hasattr(args, f.name)})


def _dsac_config(args: argparse.Namespace) -> DSACConfig:
    """--stage dsac's options (dests ``dsac_<field>``) and the stage-1 options it shares; None keeps the default."""
    given = {f.name: getattr(args, "dsac_" + f.name, None) for f in fields(DSACConfig)}
    given.update({name: getattr(args, name) for name in DSAC_SHARED_OPTIONS})
    return _config(DSACConfig, {name: value for name, value in given.items() if value is not None})


def _config(kind: type, values: dict) -> Any:
    """``kind(**values)``, its checks' ValueError as a one-line SceneLocError."""
    try:
        return kind(**values)
    except ValueError as e:
        raise SceneLocError(str(e)) from None


def _add_map_arguments(s: argparse.ArgumentParser) -> None:
    d, dd = MappingConfig(), DSACConfig()

    def per_arch(key: str) -> str:
        return ", ".join(f"{arch} {v[key]:g}" if isinstance(v[key], float) else f"{arch} {v[key]}"
                         for arch, v in ARCH_DEFAULTS.items())

    def option(group: Any, name: str, help: str = "", **kwargs: Any) -> None:
        _field_option(group, d, name, help, **kwargs)

    s.add_argument("dataset", help="dataset root (its train split is mapped)")
    s.add_argument("map_dir", help="output directory for the map")
    g = s.add_argument_group("network")
    option(g, "arch", "xfeat: frozen pretrained XFeat encoder + per-pixel head trained from a pixel buffer (ACE); "
                      "fcn: DSAC*-style network learned from scratch; unet: the paper's", choices=list(ARCH_DEFAULTS))
    option(g, "head_width", "xfeat head width")
    option(g, "head_blocks", "xfeat head residual blocks")
    option(g, "head_loss", "xfeat head loss", choices=HEAD_LOSSES)
    option(g, "buffer_mb", "xfeat training buffer size in MB")
    option(g, "buffer_copies", "views of each mapping image in the buffer, the first unaugmented")
    option(g, "pixel_batch", "buffer pixels per head step")
    option(g, "precision", "xfeat encoder and head arithmetic: auto = bf16 where the CPU/GPU runs it natively "
                           "(about 2x faster), else fp32", choices=PRECISIONS)
    option(g, "width", "base channel width (default " + ", ".join(f"{n} for {a}" for a, n in DEFAULT_WIDTH.items())
           + ")", type=int)
    option(g, "stride", "fcn output stride", choices=FCN_STRIDES)
    option(g, "stem", "fcn first layer: stride 2, or full resolution as DSAC*", choices=FCN_STEMS)
    option(g, "blocks", "fcn residual blocks")
    option(g, "input_height", f"network input rows (default {per_arch('input_height')})", type=int)
    g = s.add_argument_group("loss and optimisation")
    option(g, "loss", "default %(default)s (measured best under a CPU budget; the paper's best is tukey+smooth)",
           choices=COORDINATE_LOSSES)
    option(g, "tukey_c", "Tukey constant in metres (default half the scene diameter)", type=float)
    option(g, "smooth_weight", "weight of the smoothness term of tukey+smooth")
    option(g, "neighbourhood", "neighbours of a pixel in the smoothness term", choices=NEIGHBOURHOODS)
    option(g, "optimizer", f"fcn/unet optimiser (default {per_arch('optimizer')}; the xfeat head uses adamw)",
           choices=OPTIMIZERS)
    option(g, "lr", f"learning rate (default {per_arch('lr')}; the paper's 5e-4)", type=float)
    option(g, "schedule", "learning rate over the budget: cosine decay or, as the paper, constant", choices=SCHEDULES)
    option(g, "batch_size", "images per step (default %(default)s; the paper's 20)")
    option(g, "minutes", f"wall-clock budget of stage 1, the head for xfeat (default {per_arch('minutes')}), "
                         f"or of --stage dsac (default {dd.minutes:g})", type=float)
    option(g, "iterations", "train for exactly N steps instead (repeatable)", type=int)
    option(g, "aug_scale", f"random zoom in [1/a, a] (1 = off; default {per_arch('aug_scale')})", type=float)
    option(g, "aug_rotation_deg", "random roll in degrees, 0 = off", aliases=("--aug-rotation",))
    option(g, "aug_brightness", "random brightness shift in [-b, b] of images in [0, 1], 0 = off")
    option(g, "aug_contrast", "random contrast factor in [1 - c, 1 + c], 0 = off")
    option(g, "aug_novel_views", "xfeat: buffer copies rendered, with their depth, from a camera orbited about "
                                 "the scene ahead (of --buffer-copies - 1 augmented ones), 0 = off")
    option(g, "aug_orbit_deg", "xfeat: largest orbit of those novel views, degrees", type=float,
           aliases=("--aug-orbit",))
    option(g, "checkpoint_minutes", "save MAP_DIR/checkpoint.pt (for --resume) this often")
    option(g, "snapshot_minutes", "also save the weights after these training minutes (MAP_DIR/snapshots/)",
           type=float, nargs="+")
    option(g, "seed", "random seed of both stages and of --stage dsac")
    option(g, "calibration_minutes", "xfeat: train a second head this long without one recording of the mapping "
                                     "frames and localize those, to calibrate each pose's probability of being "
                                     "within 5 cm / 5 deg; 0 = no calibration")
    option(g, "cloud_voxel_m", "fuse the mapping depth into a scene surface of this voxel size in metres, which "
                               "RGB-D poses are finally aligned to by ICP; 0 = none", aliases=("--cloud-voxel",),
           metavar="M")
    option(g, "view_voxel_m", "fuse the mapping depth and grey values into a scene view of this voxel size in "
                              "metres, which RGB poses are finally aligned to by rendering it; 0 = none",
           aliases=("--view-voxel",), metavar="M")
    g = s.add_argument_group("confidence (stage 2)")
    g.add_argument("--no-confidence", dest="confidence", action="store_false", help="skip stage 2")
    option(g, "confidence_mode", "both: also train the inlier classifier for the ROC comparison (paper Fig. 3)",
           choices=CONFIDENCE_MODES)
    option(g, "confidence_minutes", f"stage-2 budget (default {per_arch('confidence_minutes')})", type=float)
    option(g, "confidence_blocks", "context-normalised residual blocks in the PointNet (Yi et al.; 0: plain PointNet)")
    option(g, "n_k", "points per PointNet set")
    s.add_argument("--intrinsics", help=INTRINSICS_HELP)
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--resume", action="store_true", help="continue from MAP_DIR/checkpoint.pt")
    s.add_argument("--force", action="store_true", help="overwrite a non-empty MAP_DIR")
    s.add_argument("--no-test-eval", action="store_true", help="skip the coordinate accuracy on the test split")
    g = s.add_argument_group("DSAC fine-tuning (--stage dsac: end to end through differentiable RANSAC)")
    g.add_argument("--stage", choices=["base", "confidence", "dsac"], default="base",
                   help="base: stages 1 and 2, a new map (default); confidence: (re)train stage 2 of the existing "
                        "map in MAP_DIR (--force replaces its confidence network); dsac: fine-tune the existing map, "
                        "writing coordinates_dsac.pt, score.pt and dsac_config.json beside it (--force replaces them)")
    _field_option(g, dd, "mode", "hypotheses by PnP (rgb) or Kabsch with depth (rgbd)", dest="dsac_mode",
                  choices=MODES)
    _field_option(g, dd, "score", "learned Score CNN (DSAC) or soft inlier count (DSAC*)", dest="dsac_score",
                  choices=DSAC_SCORES)
    _field_option(g, dd, "objective", "exact expected loss over all hypotheses, or sampled REINFORCE",
                  dest="dsac_objective", choices=OBJECTIVES)
    _field_option(g, dd, "hypotheses", "hypotheses per training image", dest="dsac_hypotheses")
    s.set_defaults(func=_cmd_map)


def _pose_config(args: argparse.Namespace) -> PoseConfig:
    """The pose options, whose dests are PoseConfig's field names."""
    return _config(PoseConfig, {f.name: getattr(args, f.name) for f in fields(PoseConfig) if hasattr(args, f.name)})


def _add_pose_arguments(s: argparse.ArgumentParser) -> None:
    d = PoseConfig()
    g = s.add_argument_group("pose estimation (default ransac, measured best; --method confidence is the paper "
                             "III-C estimator, whose defaults are the paper's)")
    _field_option(g, d, "method", "dsac|softam: DSAC's argmax|SoftAM selection with the map's --stage dsac (they "
                                  "use --hypotheses and --min-inliers; the other options are the stage's)",
                  choices=METHODS)
    _field_option(g, d, "dsac_score", "hypothesis score of dsac|softam (default: the stage's); soft-inliers needs "
                                      "no DSAC stage", choices=DSAC_SCORES)
    _field_option(g, d, "hypotheses", "h_p, pose hypotheses sampled")
    _field_option(g, d, "n_k", "N_k points sampled per hypothesis")
    _field_option(g, d, "best_fraction", "most confident share kept")
    _field_option(g, d, "spread_cells", "G > 0: keep the most confident per cell of a G x G image grid, not "
                                        "globally (default %(default)s, the paper's global top share)")
    _field_option(g, d, "refine_rounds", "rounds of the paper's refinement")
    _field_option(g, d, "pnp_method", "PnP solver of hypotheses and refinement", choices=PNP_CHOICES)
    _field_option(g, d, "score", "hypothesis score of --method confidence (default %(default)s, the paper's)",
                  choices=POSE_SCORES)
    _field_option(g, d, "inlier_threshold_px", "PnP inlier threshold in pixels (default 20 for ransac, measured "
                                              "best, and 15 on a map made without depth, both scaled from a 525 px "
                                              "focal length; 10, DSAC*/ACE's, for the others)", flag="--threshold-px",
                  metavar="PX", type=float)
    _field_option(g, d, "inlier_threshold_m", "Kabsch inlier threshold in metres", flag="--threshold-m", metavar="M")
    g.add_argument("--no-polish", dest="polish", action="store_false",
                   help="skip the final re-fit on all inliers (pure paper)")
    g.add_argument("--ransac-local-optimisation", dest="ransac_local_optimisation", action="store_true",
                   help="--method ransac, RGB: also run MAGSAC++'s local optimisation of its best models (OpenCV's "
                        "USAC_MAGSAC; off by default: the re-fits and the view alignment after it refine the pose, "
                        "faster at the same accuracy)")
    _field_option(g, d, "polish_thresholds_m", "Kabsch: re-fit again on the inliers at each of these tighter "
                                               "thresholds in metres", type=float, nargs="*")
    _field_option(g, d, "polish_thresholds_px", "PnP: the same in pixels of the query image",
                  type=float, nargs="*")
    _field_option(g, d, "depth_offset_sigma_m", "Kabsch: then re-fit with an offset of the query depth along its "
                                                "rays, under a Gaussian prior of this width in metres (0: off)",
                  aliases=("--depth-offset-sigma",), metavar="M")
    _field_option(g, d, "depth_offset_min_m", "Kabsch: keep that re-fit only where the offset is at least this "
                                              "long in metres (0: always)", aliases=("--depth-offset-min",),
                  metavar="M")
    _field_option(g, d, "icp_distances_m", "RGB-D on a map with a scene surface: finally align the query depth to "
                                           "it by point-to-plane ICP, one step per matching distance in metres "
                                           "(give none for no ICP)", aliases=("--icp-distances",), type=float,
                  nargs="*", metavar="M")
    _field_option(g, d, "icp_offset_sigma_m", "RGB-D: the ICP also fits an offset of the query depth along its rays "
                                              "under a Gaussian prior of this width in metres (0: no offset)",
                  aliases=("--icp-offset-sigma",), metavar="M")
    _field_option(g, d, "icp_scale_sigma", "RGB-D: the ICP also fits a scale error of the query depth under a "
                                           "Gaussian prior of this relative width (0: none)", metavar="K")
    _field_option(g, d, "view_rounds", "RGB on a map with a scene view: finally align the pose to the image, this "
                                       "many rounds of rendering the view at the pose, optical flow to the query "
                                       "and a re-fit (0: off)", metavar="N")
    _field_option(g, d, "depth_image_offset_max_px", "RGB-D: depth whose pose shows the network's matches this many "
                  "px off in the image is re-registered, else the image's pose is used (0: off)", metavar="PX")
    _field_option(g, d, "depth_reregister_rounds", "RGB-D: re-registrations of such depth before the image's pose "
                  "is used (0: at once)", metavar="N")
    _field_option(g, d, "refine_min_inlier_share", "keep the ICP / view alignment only where the refined pose keeps "
                  "this share of the network's inliers (0: always)", metavar="S")
    _field_option(g, d, "min_inliers", "fewer inliers report a failure")
    _field_option(g, d, "query_scales", "run the network on the query at each of these scales and keep the pose "
                                        "with the highest inlier ratio (default 1; 0.9 0.75: views closer than the "
                                        "mapping views, ~2x the time)", type=float, nargs="+", metavar="S")
    _field_option(g, d, "depth_gate", "--method joint: ignore the query depth when the pose refined with it fits "
                                      "the image worse than PnP by more than this fraction, 0: never")
    g.add_argument("--seed", type=int, default=0, help="random seed of the pose estimator: a fixed seed gives "
                   "bit-identical poses between runs on one machine (default %(default)s)")


def _cmd_localize(args: argparse.Namespace) -> None:
    check_localize_inputs(args)   # conflicting inputs and an unwritable --out, before the map is loaded
    config = _pose_config(args)
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
        solver = "Kabsch" if depth is not None else "PnP"
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
                 estimator=_pose_config(args), poses=args.poses, force=args.force, seed=args.seed,
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
    _add_pose_arguments(s)
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

    _add_map_arguments(sub.add_parser("map", help="learn a scene map from a dataset's train split"))

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
    _add_pose_arguments(s)
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
    add_scale_options(sub, _mapping_config, _pose_config)
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
