"""``sceneloc localize MAP --images DIR|LIST.txt``: new photos without ground truth localized in one
run (one map load), written as the usual pose file; and the checks of ``localize``'s inputs that run
before the map is loaded (conflicting inputs, an unwritable ``--out``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.geometry import PoseRecord, write_pose_file
from sceneloc.localize.batch import check_queries_for_map, find_queries, localize_queries
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig
from sceneloc.validation import check_budget, check_config_budgets, check_output_path


def add_batch_arguments(s: argparse.ArgumentParser) -> None:
    """``localize``'s batch options (and ``--depth-scale``, shared with ``--depth``)."""
    s.add_argument("--images", metavar="DIR|LIST.txt",
                   help="localize these new images (no ground truth): a folder (searched recursively) or a list, one "
                        "image per line relative to the list, optionally with its camera as hloc's query list "
                        "('name PINHOLE w h fx fy cx cy' or 'name SIMPLE_PINHOLE w h f cx cy'); needs --out")
    s.add_argument("--depth-dir", metavar="DIR", help="with --images: depth maps <name>.png (same relative path) "
                   "for Kabsch")
    s.add_argument("--depth-scale", type=float, default=0.001, metavar="M",
                   help="metres per unit of the uint16 depth PNGs of --depth/--depth-dir (default %(default)s: mm)")


def check_localize_inputs(args: argparse.Namespace) -> None:
    """One source of queries (DATASET, --images or --image), the options that go with it, and --out
    writable (parent exists, not a folder, not present without --force) before anything is loaded."""
    sources = [name for name, given in (("DATASET", args.dataset), ("--images", args.images), ("--image", args.image))
               if given]
    if len(sources) > 1:
        raise SceneLocError(f"{' and '.join(sources)}: give one source of images to localize")
    if not sources:
        raise SceneLocError("give a DATASET (with --split), --images DIR|LIST.txt or --image IMG")
    check_budget("--depth-scale", args.depth_scale)
    check_config_budgets(args)   # --seed, --n-k
    if args.depth and not args.image:
        raise SceneLocError("--depth goes with --image (use --depth-dir with --images, --mode rgbd with a DATASET)")
    if args.depth_dir and not args.images:
        raise SceneLocError("--depth-dir goes with --images")
    if args.image:
        return
    if not args.out:
        what = "a dataset" if args.dataset else "--images"
        raise SceneLocError(f"--out POSES.txt is required when localizing {what}")
    check_output_path(args.out, "file", [args.dataset, args.images], "--out", force=args.force)


def localize_batch(args: argparse.Namespace, config: PoseConfig, K: np.ndarray | None) -> None:
    """Check every query, load the map once, localize them all and write the pose file."""
    queries = find_queries(args.images, args.depth_dir, K)
    the_map = Map.load(args.map_dir, device=args.device)
    check_queries_for_map(the_map, queries)
    records, failures = [], 0
    for q, res in localize_queries(the_map, queries, config, args.seed, args.depth_scale):
        failures += res.pose is None
        records.append(PoseRecord(q.name, res.pose, res.pose_file_columns(), res.failure))
    out = Path(args.out)
    write_pose_file(out, records, comment=f"sceneloc localize {args.map_dir} --images {args.images} "
                                           f"--method {args.method} --seed {args.seed}")
    times = np.array([r.extras["time_ms"] for r in records])
    print(f"{len(records)} images localized, {failures} failures; time per image median {np.median(times):.0f} ms; "
          f"poses written to {out}")
