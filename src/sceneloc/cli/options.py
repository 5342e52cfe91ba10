"""The options of ``sceneloc map`` and ``sceneloc localize``, made from the config dataclasses' fields
(``field_option``): their defaults are the library's, and tests/test_cli_config.py checks that every field
is exposed or deliberately not. The pose options come in groups by concern: hypotheses, RANSAC and
thresholds, re-fits, the final alignment to the scene, and query depth as evidence."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from sceneloc.data.dataset import POSE_CAMERAS
from sceneloc.errors import SceneLocError
from sceneloc.nets.encoders import PRECISIONS
from sceneloc.nets.losses import COORDINATE_LOSSES, NEIGHBOURHOODS
from sceneloc.nets.models import FCN_STEMS, FCN_STRIDES
from sceneloc.pose.config import DSAC_SCORES, METHODS, PoseConfig
from sceneloc.pose.config import SCORES as POSE_SCORES
from sceneloc.pose.dsac import MODES, OBJECTIVES, DSACConfig
from sceneloc.training.head import LOSSES as HEAD_LOSSES
from sceneloc.training.loop import SCHEDULES
from sceneloc.training.trainers import ARCH_DEFAULTS, CONFIDENCE_MODES, DEFAULT_WIDTH, OPTIMIZERS, MappingConfig

#: Stage-1 options that --stage dsac also reads (None: DSACConfig's default); its own options are dsac_<field>.
DSAC_SHARED_OPTIONS = ("minutes", "iterations", "seed")
#: PoseConfig.pnp_method values offered: the solvers that take many points (p3p takes exactly 4).
PNP_CHOICES = ("epnp", "sqpnp")
INTRINSICS_HELP = ("override: 'fx,fy,cx,cy' or a file with a 3x3 matrix, the camera of the images and of "
                   "their depth maps alike (no registration)")


def field_option(group: Any, config: object, name: str, help: str = "", *, flag: str | None = None,
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


def mapping_config(args: argparse.Namespace) -> MappingConfig:
    """The stage-1 and stage-2 options, whose dests are MappingConfig's field names."""
    return MappingConfig(**{f.name: getattr(args, f.name) for f in fields(MappingConfig) if hasattr(args, f.name)})


def dsac_config(args: argparse.Namespace) -> DSACConfig:
    """--stage dsac's options (dests ``dsac_<field>``) and the stage-1 options it shares; None keeps the default."""
    given = {f.name: getattr(args, "dsac_" + f.name, None) for f in fields(DSACConfig)}
    given.update({name: getattr(args, name) for name in DSAC_SHARED_OPTIONS})
    return parsed_config(DSACConfig, {name: value for name, value in given.items() if value is not None})


def parsed_config(kind: type, values: dict) -> Any:
    """``kind(**values)``, its checks' ValueError as a one-line SceneLocError."""
    try:
        return kind(**values)
    except ValueError as e:
        raise SceneLocError(str(e)) from None


def add_map_arguments(s: argparse.ArgumentParser) -> None:
    d, dd = MappingConfig(), DSACConfig()

    def per_arch(key: str) -> str:
        return ", ".join(f"{arch} {v[key]:g}" if isinstance(v[key], float) else f"{arch} {v[key]}"
                         for arch, v in ARCH_DEFAULTS.items())

    def option(group: Any, name: str, help: str = "", **kwargs: Any) -> None:
        field_option(group, d, name, help, **kwargs)

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
    option(g, "depth_to_pose_scale", "pose length units per metre of the depth: the mapping depth and every "
                                     "RGB-D query's are multiplied by it (a depth camera's metre against an SfM "
                                     "model's unit); 1 = depth in pose units", metavar="S")
    option(g, "pose_camera", "the camera the mapping poses belong to: depth (a depth tracker's, e.g. 7-Scenes' "
                             "pose.txt): RGB-D poses come from the depth; colour (SfM, COLMAP, visual SLAM): RGB-D "
                             "poses are the image's, started from the depth's (default: what the dataset's "
                             "pose-camera.txt says, else depth)", choices=POSE_CAMERAS)
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
    field_option(g, dd, "mode", "hypotheses by PnP (rgb) or Kabsch with depth (rgbd)", dest="dsac_mode",
                  choices=MODES)
    field_option(g, dd, "score", "learned Score CNN (DSAC) or soft inlier count (DSAC*)", dest="dsac_score",
                  choices=DSAC_SCORES)
    field_option(g, dd, "objective", "exact expected loss over all hypotheses, or sampled REINFORCE",
                  dest="dsac_objective", choices=OBJECTIVES)
    field_option(g, dd, "hypotheses", "hypotheses per training image", dest="dsac_hypotheses")


def pose_config(args: argparse.Namespace) -> PoseConfig:
    """The pose options, whose dests are PoseConfig's field names."""
    return parsed_config(PoseConfig, {f.name: getattr(args, f.name) for f in fields(PoseConfig)
                                      if hasattr(args, f.name)})


def add_pose_arguments(s: argparse.ArgumentParser) -> None:
    """The pose options of ``localize``, ``evaluate`` and ``serve``, in groups by concern."""
    d = PoseConfig()
    g = s.add_argument_group("pose: estimator and hypotheses (default ransac, measured best; --method confidence "
                             "is the paper's III-C estimator with the paper's values)")
    field_option(g, d, "method", "dsac|softam: DSAC's argmax|SoftAM selection with the map's --stage dsac (they use "
                                 "--hypotheses and --min-inliers; the other options are the stage's)", choices=METHODS)
    field_option(g, d, "dsac_score", "hypothesis score of dsac|softam (default: the stage's); soft-inliers needs no "
                                     "DSAC stage", choices=DSAC_SCORES)
    field_option(g, d, "hypotheses", "h_p, pose hypotheses sampled")
    field_option(g, d, "n_k", "N_k points sampled per hypothesis")
    field_option(g, d, "best_fraction", "most confident share kept")
    field_option(g, d, "spread_cells", "G > 0: keep the most confident per cell of a G x G image grid, not globally "
                                       "(default %(default)s, the paper's global top share)")
    field_option(g, d, "refine_rounds", "rounds of the paper's refinement")
    field_option(g, d, "pnp_method", "PnP solver of hypotheses and refinement", choices=PNP_CHOICES)
    field_option(g, d, "score", "hypothesis score of --method confidence (default %(default)s, the paper's)",
                 choices=POSE_SCORES)
    field_option(g, d, "query_scales", "run the network on the query at each of these scales and keep the pose with "
                                       "the highest inlier ratio (default 1; 0.9 0.75: views closer than the mapping "
                                       "views, ~2x the time)", type=float, nargs="+", metavar="S")
    field_option(g, d, "depth_gate", "--method joint: ignore the query depth when the pose refined with it fits the "
                                     "image worse than PnP by more than this fraction, 0: never")
    g.add_argument("--seed", type=int, default=0, help="random seed of the pose estimator: a fixed seed gives "
                   "bit-identical poses between runs on one machine (default %(default)s)")

    g = s.add_argument_group("pose: RANSAC and inliers")
    field_option(g, d, "inlier_threshold_px", "PnP inlier threshold in pixels of the query image (default: 20 for "
                                              "ransac, 15 on a map made without depth, both at a 525 px focal length "
                                              "and scaled with it; 10, DSAC*/ACE's, for the others)",
                 flag="--threshold-px", metavar="PX", type=float)
    field_option(g, d, "inlier_threshold_m", "Kabsch inlier threshold in metres", flag="--threshold-m", metavar="M")
    g.add_argument("--ransac-local-optimisation", dest="ransac_local_optimisation", action="store_true",
                   help="--method ransac, RGB: also run MAGSAC++'s local optimisation of its best models (OpenCV's "
                        "USAC_MAGSAC; off by default: the re-fits and the view alignment after it refine the pose, "
                        "faster at the same accuracy)")
    field_option(g, d, "min_inliers", "fewer inliers report a failure")

    g = s.add_argument_group("pose: re-fits on the inliers")
    g.add_argument("--no-polish", dest="polish", action="store_false",
                   help="skip the final re-fit on all inliers (pure paper)")
    field_option(g, d, "polish_thresholds_m", "Kabsch: re-fit again on the inliers at each of these tighter "
                                              "thresholds in metres", type=float, nargs="*")
    field_option(g, d, "polish_thresholds_px", "PnP: the same in pixels of the query image", type=float, nargs="*")
    field_option(g, d, "depth_offset_sigma_m", "Kabsch: then re-fit with an offset of the query depth along its rays, "
                                               "under a Gaussian prior of this width in metres (0: off)",
                 aliases=("--depth-offset-sigma",), metavar="M")
    field_option(g, d, "depth_offset_min_m", "Kabsch: keep that re-fit only where the offset is at least this long "
                                             "in metres (0: always)", aliases=("--depth-offset-min",), metavar="M")

    g = s.add_argument_group("pose: final alignment to the map's scene surface (RGB-D) and view (RGB)")
    field_option(g, d, "icp_distances_m", "RGB-D on a map with a scene surface: finally align the query depth to it "
                                          "by point-to-plane ICP, one step per matching distance in metres (give "
                                          "none for no ICP)", aliases=("--icp-distances",), type=float, nargs="*",
                 metavar="M")
    field_option(g, d, "icp_offset_sigma_m", "RGB-D: the ICP also fits an offset of the query depth along its rays "
                                             "under a Gaussian prior of this width in metres (0: no offset)",
                 aliases=("--icp-offset-sigma",), metavar="M")
    field_option(g, d, "icp_scale_sigma", "RGB-D: the ICP also fits a scale error of the query depth under a "
                                          "Gaussian prior of this relative width (0: none)", metavar="K")
    field_option(g, d, "icp_scale_min_sigmas", "RGB-D: keep that scale only this many of its standard deviations "
                                               "away from 0, else fit without it (0: always keep it)", metavar="Z")
    field_option(g, d, "view_rounds", "RGB on a map with a scene view: finally align the pose to the image, this many "
                                      "rounds of rendering the view at the pose, optical flow to the query and a "
                                      "re-fit (0: off)", metavar="N")
    field_option(g, d, "refine_min_inlier_share", "keep the ICP / view alignment only where the refined pose keeps "
                                                  "this share of the network's inliers (0: always)", metavar="S")

    g = s.add_argument_group("pose: query depth as evidence")
    field_option(g, d, "depth_image_offset_max_px", "RGB-D: depth whose pose shows the network's matches this many "
                                                    "px off in the image is re-registered, else the image's pose is "
                                                    "used (0: off)", metavar="PX")
    field_option(g, d, "depth_reregister_rounds", "RGB-D: re-registrations of such depth before the image's pose is "
                                                  "used (0: at once)", metavar="N")
