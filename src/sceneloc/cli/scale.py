"""The command-line side of large spaces: ``sceneloc map``'s partition and Ray options, and ``sceneloc
localize`` over a partitioned map or a folder of maps (routed, scale/routing.py).

``add_scale_options(sub)`` adds the options to the existing ``map`` and ``localize`` subcommands and
wraps their handlers: a capture that stays one partition, and a single map directory, go to the plain
handlers unchanged.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sceneloc.cli.batch import check_localize_inputs
from sceneloc.data.dataset import load_scene
from sceneloc.data.readers import parse_intrinsics, read_depth, read_image
from sceneloc.errors import SceneLocError
from sceneloc.geometry import write_pose_file
from sceneloc.pose.config import PoseConfig
from sceneloc.scale.partition import LAYOUT_FILE, PARTITION_METHODS
from sceneloc.scale.ray_mapping import map_partitioned, plan_partitions
from sceneloc.scale.routing import (
    DEFAULT_TOP_K,
    MapSet,
    check_top_k,
    is_map_set,
    localize_routed_frames,
    routed_pose_record,
)
from sceneloc.training.trainers import MappingConfig

Handler = Callable[[argparse.Namespace], None]


def _partitions(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of partitions or 'auto'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: need at least 1 partition")
    return n


def add_scale_options(sub: argparse._SubParsersAction, mapping_config: Callable[[argparse.Namespace], MappingConfig],
                      pose_config: Callable[[argparse.Namespace], PoseConfig]) -> None:
    """Partition/Ray options on ``map`` and routing on ``localize`` and ``evaluate`` (subparsers of ``sub``); the plain
    handlers stay in charge of single maps. ``mapping_config``/``pose_config`` read the parsed options."""
    map_parser, localize_parser = sub.choices["map"], sub.choices["localize"]
    g = map_parser.add_argument_group("large spaces (partitioned maps built on Ray; docs/scale.md)")
    g.add_argument("--partitions", type=_partitions, default=None, metavar="N|auto",
                   help="split the mapping frames into N spatial partitions (camera positions and viewing "
                        "directions, with overlap), each its own head, surface and view; auto (default): one "
                        "map unless the cameras spread over more than 12 m or 5000 frames")
    g.add_argument("--partition-by", choices=PARTITION_METHODS, default="space",
                   help="space: k-means of the views (default); folder: one partition per first folder of the "
                        "frame names (seq-01, seq-02, ...: the user's own grouping)")
    g.add_argument("--partition-overlap-m", type=float, default=0.5, metavar="M",
                   help="a frame joins every partition at most M metres (view distance) further than its "
                        "nearest one (default %(default)s)")
    g.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="map the partitions on this Ray cluster (or RAY_ADDRESS); default: a local Ray")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="local Ray: partitions mapped at once (default: one per CPU core)")
    plain_map = map_parser.get_default("func")
    map_parser.set_defaults(func=_map_handler(plain_map, mapping_config))

    localize_parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                                 help="a partitioned map or a folder of maps as MAP_DIR: the query goes to the "
                                      "K maps whose mapping frames look most like it (default %(default)s)")
    sub.choices["evaluate"].add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                                         help="a partitioned map or a folder of maps as MAP_DIR: each frame goes to "
                                              "the K maps whose mapping frames look most like it (default "
                                              "%(default)s)")
    plain_localize = localize_parser.get_default("func")
    localize_parser.set_defaults(func=_localize_handler(plain_localize, pose_config))


def _map_handler(plain: Handler, mapping_config: Callable[[argparse.Namespace], MappingConfig]) -> Handler:
    def handle(args: argparse.Namespace) -> None:
        resuming_parts = args.resume and (Path(args.map_dir) / LAYOUT_FILE).exists()
        if args.stage != "base" or (args.partitions == 1 and not resuming_parts):
            plain(args)
            return
        K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
        parts = plan_partitions(args.dataset, args.partitions, args.partition_by, args.partition_overlap_m, K)
        if len(parts) == 1 and not resuming_parts:   # a room-sized capture: exactly today's single map
            plain(args)
            return
        map_partitioned(args.dataset, args.map_dir, mapping_config(args), parts, force=args.force,
                        resume=args.resume, intrinsics=K, ray_address=args.ray_address, workers=args.ray_workers)
    return handle


def _localize_handler(plain: Handler, pose_config: Callable[[argparse.Namespace], PoseConfig]) -> Handler:
    def handle(args: argparse.Namespace) -> None:
        if not is_map_set(Path(args.map_dir)):
            plain(args)
            return
        check_map_set_inputs(args)
        maps = MapSet.load(args.map_dir, device=args.device)
        config = pose_config(args)
        K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
        if args.image:
            image = read_image(Path(args.image))
            depth = read_depth(Path(args.depth), image.shape[:2], args.depth_scale) if args.depth else None
            routed = maps.localize(image, depth, K, config, np.random.default_rng(args.seed), args.top_k)
            res = routed.result
            tried = ", ".join(f"{n} ({s:.2f})" for n, s in routed.routed)
            if res.pose is None:
                raise SceneLocError(f"{args.image}: not localized in any routed map ({tried}): {res.failure}")
            stages = ", ".join(f"{k[:-3]} {v:.0f} ms" for k, v in routed.timings.items())
            print(f"{args.image}: in {routed.name} ({res.inliers} inliers, P(within 5 cm / 5 deg) = "
                  f"{res.probability:.2f}); routed to {tried}; {stages}")
            np.set_printoptions(precision=6, suppress=True)
            print(res.pose)
            return
        out = Path(args.out)
        names = list(maps.maps)
        frames = load_scene(args.dataset, K).frames(args.split)
        records = [routed_pose_record(frame.name, routed, names) for frame, routed in
                   localize_routed_frames(maps, frames, args.mode, config, args.seed, args.top_k)]
        failures = sum(r.pose is None for r in records)
        write_pose_file(out, records, comment=f"sceneloc localize {args.map_dir} {args.dataset} --split {args.split} "
                                              f"--mode {args.mode} --top-k {args.top_k}\nmap_index: "
                                              + " ".join(f"{i}={n}" for i, n in enumerate(names)))
        total = np.array([r.extras["routed_total_ms"] for r in records])
        routing = np.array([r.extras["routing_ms"] for r in records])
        print(f"{len(records)} frames localized over {len(names)} maps, {failures} not localized; per frame median "
              f"{np.median(total):.0f} ms (routing {np.median(routing):.0f} ms); poses written to {out}")
    return handle


def check_map_set_inputs(args: argparse.Namespace) -> None:
    """``localize``'s checks on a map set, before any map is loaded: those of every localize
    (cli_batch.check_localize_inputs), ``--top-k``, and the options a map set does not take yet."""
    check_localize_inputs(args)
    check_top_k(args.top_k)
    for flag, given in (("--images", args.images), ("--sequence", args.sequence), ("--rerun", args.rerun)):
        if given:
            raise SceneLocError(f"{flag}: not available on a map set ({args.map_dir}) yet; localize a DATASET or "
                                f"--image IMG, or give one of its maps as MAP_DIR")
