"""The commands for a user's own capture: ``sceneloc import colmap``, ``sceneloc sfm`` and
``sceneloc check`` (their options and output); cli/main.py registers them with ``add_capture_commands``."""

from __future__ import annotations

import argparse
from typing import Any

from sceneloc.capture.check import check_capture, format_check
from sceneloc.capture.colmap import import_colmap
from sceneloc.capture.sfm import AUTO_EXHAUSTIVE_MAX, MATCHERS, run_sfm
from sceneloc.data.readers import parse_intrinsics
from sceneloc.errors import SceneLocError


def _known_distance(spec: list[str] | None):
    """--known-distance IMG_A IMG_B METRES -> (a, b, metres)."""
    if spec is None:
        return None
    try:
        return spec[0], spec[1], float(spec[2])
    except ValueError:
        raise SceneLocError(f"--known-distance {' '.join(spec)}: expected IMG_A IMG_B METRES") from None


def _print_import_summary(info: dict, out) -> None:
    n_unreg = len(info["unregistered"])
    total = info["registered"] + n_unreg
    unregistered = (f"; not registered: {', '.join(info['unregistered'][:5])}{' ...' if n_unreg > 5 else ''}"
                    if n_unreg else "")
    print(f"{info['registered']} of {total} images registered ({info['registered'] / max(total, 1):.0%})"
          + unregistered)
    print(f"frames: {info['frames']['train']} train, {info['frames']['test']} test; images are {info['images']}")
    if len(info["cameras"]) > 1:
        print(f"cameras: {len(info['cameras'])} (each image keeps its own camera's intrinsics)")
    print(f"frame: {info['frame']}")
    print(f"units: {info['units']}")
    print(f"dataset written to {out} (details: {out}/import_info.json; check it with 'sceneloc check {out}')")


def _add_split_arguments(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("train/test split (one rule; default: every image is a training image)")
    g.add_argument("--test-every", type=int, metavar="N", help="every N-th image in name order goes to test")
    g.add_argument("--test-list", metavar="FILE",
                   help="the image names (one per line, as in the model) that go to test")
    g.add_argument("--test-match", metavar="GLOB", help="image names matching this glob go to test (e.g. 'seq-02/*')")
    g = s.add_argument_group("scale (default: metric from --depth-dir, else the model's units, stated as such)")
    g.add_argument("--depth-dir", metavar="DIR", help="depth maps (uint16 PNG, mm) named like the images "
                   "(<stem>.png, or <x>.depth.png for <x>.color.jpg): attached to the frames and used for the scale")
    g.add_argument("--known-distance", nargs=3, metavar=("IMG_A", "IMG_B", "METRES"),
                   help="the distance between two cameras' centres fixes the scale")
    g.add_argument("--scale", type=float, help="multiply the model's translations by this (metres per model unit)")
    s.add_argument("--link", action="store_true", help="symlink images and depth maps instead of copying them "
                   "(smaller, but the dataset then depends on the original files)")
    s.add_argument("--force", action="store_true", help="replace an existing OUT")


def _cmd_import_colmap(args: argparse.Namespace) -> None:
    info = import_colmap(args.model_dir, args.image_dir, args.out, depth_dir=args.depth_dir, test_every=args.test_every,
                         test_list=args.test_list, test_match=args.test_match, scale=args.scale,
                         known_distance=_known_distance(args.known_distance), link=args.link, force=args.force)
    _print_import_summary(info, args.out)


def _cmd_sfm(args: argparse.Namespace) -> None:
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    info = run_sfm(args.image_dir, args.out, intrinsics=K, depth_dir=args.depth_dir,
                   known_distance=_known_distance(args.known_distance), scale=args.scale,
                   max_features=args.max_features, matcher=args.matcher, overlap=args.overlap,
                   test_every=args.test_every, test_list=args.test_list, test_match=args.test_match,
                   link=args.link, force=args.force, seed=args.seed, progress=not args.quiet,
                   camera_per_folder=args.camera_per_folder)
    t = info["timings_s"]
    print(f"SfM: features {t['features_s']:.0f} s, matching {t['matching_s']:.0f} s, mapping {t['mapping_s']:.0f} s, "
          f"total {t['total_s']:.0f} s")
    _print_import_summary(info, args.out)


def _cmd_check(args: argparse.Namespace) -> None:
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    print(format_check(check_capture(args.dataset, K)))


def add_capture_commands(sub: Any) -> None:
    """Add ``import colmap``, ``sfm`` and ``check`` to the ``sceneloc`` sub-parsers ``sub``."""
    s = sub.add_parser("import", help="turn another tool's output into a sceneloc dataset")
    isub = s.add_subparsers(dest="source", metavar="SOURCE", required=True)
    s = isub.add_parser("colmap", help="a COLMAP sparse model (binary or text) and its images")
    s.add_argument("model_dir", help="folder with cameras, images, points3D (.bin or .txt)")
    s.add_argument("image_dir", help="the folder the model's image names are relative to")
    s.add_argument("out", help="dataset to write (DSAC*/ACE layout)")
    _add_split_arguments(s)
    s.set_defaults(func=_cmd_import_colmap)

    s = sub.add_parser("sfm", help="pose images that have none (COLMAP incremental SfM on the CPU) into a dataset")
    s.add_argument("image_dir", help="folder of .png/.jpg images (searched recursively)")
    s.add_argument("out", help="dataset to write (DSAC*/ACE layout; the COLMAP model is kept in OUT/colmap)")
    s.add_argument("--intrinsics", help="the camera, 'fx,fy,cx,cy' or a 3x3 file: kept fixed (default: a "
                   "pinhole whose focal length SfM estimates)")
    s.add_argument("--camera-per-folder", action="store_true",
                   help="one camera per sub-folder of IMAGE_DIR (images from several devices; each gets its own "
                        "intrinsics, --intrinsics then being every camera's starting and fixed value)")
    s.add_argument("--max-features", type=int, default=2048, help="SIFT features per image (default %(default)s)")
    s.add_argument("--matcher", choices=MATCHERS, default="auto",
                   help=f"image pairs to match: auto = exhaustive up to {AUTO_EXHAUSTIVE_MAX} images, else "
                        f"sequential (default %(default)s)")
    s.add_argument("--overlap", type=int, default=10,
                   help="sequential: successors matched per image (default %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed of COLMAP (default %(default)s)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_split_arguments(s)
    s.set_defaults(func=_cmd_sfm)

    s = sub.add_parser("check", help="is a capture usable? coverage, unregistered images, frames without depth")
    s.add_argument("dataset", help="dataset root (7-Scenes or DSAC*/ACE layout)")
    s.add_argument("--intrinsics", help="override: 'fx,fy,cx,cy' or a file with a 3x3 matrix")
    s.set_defaults(func=_cmd_check)
