"""Command-line interface: one subcommand per stage; each parses options and calls the library.

Errors the user can fix (:class:`SceneLocError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys

from .errors import SceneLocError


def _cmd_info(args: argparse.Namespace) -> None:
    from .data import load_scene, parse_intrinsics
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    scene = load_scene(args.dataset, K)
    stats = scene.statistics()
    K0 = next(f for fr in scene.splits.values() for f in fr).K
    print(f"dataset      {scene.root}  ({scene.layout} layout)")
    for split, n in stats.frames.items():
        print(f"{split + ' frames':<12} {n}")
    print(f"image size   {stats.image_size[1]}x{stats.image_size[0]}")
    print(f"intrinsics   fx={K0[0, 0]:.2f} fy={K0[1, 1]:.2f} cx={K0[0, 2]:.2f} cy={K0[1, 2]:.2f}")
    print(f"depth        {'yes' if stats.has_depth else 'no'}, valid share {stats.valid_depth_share:.1%}")
    lo, hi = stats.extent_min, stats.extent_max
    print(f"extent (m)   x [{lo[0]:.2f}, {hi[0]:.2f}]  y [{lo[1]:.2f}, {hi[1]:.2f}]  z [{lo[2]:.2f}, {hi[2]:.2f}]")
    print(f"diameter     {stats.diameter:.2f} m  (Tukey c = {stats.tukey_c:.2f} m)")


def _cmd_map(args: argparse.Namespace) -> None:
    from dataclasses import fields
    from .data import parse_intrinsics
    from .training import MappingConfig, map_scene
    cfg = MappingConfig(**{f.name: getattr(args, f.name) for f in fields(MappingConfig) if hasattr(args, f.name)})
    K = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    map_scene(args.dataset, args.map_dir, cfg, force=args.force, resume=args.resume, device=args.device,
              intrinsics=K, evaluate_test=not args.no_test_eval)


def _add_map_arguments(s: argparse.ArgumentParser) -> None:
    from .training import MappingConfig
    d = MappingConfig()
    s.add_argument("dataset", help="dataset root (its train split is mapped)")
    s.add_argument("map_dir", help="output directory for the map")
    g = s.add_argument_group("network")
    g.add_argument("--arch", choices=["unet", "fcn"], default=d.arch, help="coordinate network (default %(default)s)")
    g.add_argument("--width", type=int, default=d.width, help="base channel width (default %(default)s)")
    g.add_argument("--input-height", type=int, default=d.input_height, help="network input rows (default %(default)s)")
    g = s.add_argument_group("loss and optimisation")
    g.add_argument("--loss", choices=["l1", "tukey", "tukey+smooth"], default=d.loss, help="default %(default)s (the paper's best)")
    g.add_argument("--tukey-c", type=float, default=None, help="Tukey constant in metres (default half the scene diameter)")
    g.add_argument("--smooth-weight", type=float, default=d.smooth_weight)
    g.add_argument("--neighbourhood", type=int, choices=[4, 8], default=d.neighbourhood)
    g.add_argument("--optimizer", choices=["rmsprop", "adamw"], default=d.optimizer)
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)s, the paper's)")
    g.add_argument("--schedule", choices=["constant", "cosine"], default=d.schedule)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="default %(default)s (the paper's)")
    g.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock budget of stage 1 (default %(default)s)")
    g.add_argument("--iterations", type=int, default=None, help="train for exactly N steps instead (repeatable)")
    g.add_argument("--aug-scale", type=float, default=d.aug_scale, help="random zoom in [1/a, a] (1 = off)")
    g.add_argument("--aug-rotation", type=float, default=d.aug_rotation, help="random roll in degrees (0 = off)")
    g.add_argument("--aug-brightness", type=float, default=d.aug_brightness)
    g.add_argument("--aug-contrast", type=float, default=d.aug_contrast)
    g.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    g.add_argument("--seed", type=int, default=d.seed)
    g = s.add_argument_group("confidence (stage 2)")
    g.add_argument("--no-confidence", dest="confidence", action="store_false", help="skip stage 2")
    g.add_argument("--confidence-mode", choices=["regression", "classification"], default=d.confidence_mode)
    g.add_argument("--confidence-minutes", type=float, default=d.confidence_minutes)
    g.add_argument("--n-k", type=int, default=d.n_k, help="points per PointNet set (default %(default)s)")
    s.add_argument("--intrinsics", help="override: 'fx,fy,cx,cy' or a file with a 3x3 matrix")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--resume", action="store_true", help="continue from MAP_DIR/checkpoint.pt")
    s.add_argument("--force", action="store_true", help="overwrite a non-empty MAP_DIR")
    s.add_argument("--no-test-eval", action="store_true", help="skip the coordinate accuracy on the test split")
    s.set_defaults(func=_cmd_map)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneloc", description="Camera relocalization by scene coordinate regression.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"sceneloc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("info", help="print a dataset's splits, intrinsics, extent and diameter")
    s.add_argument("dataset", help="dataset root (7-Scenes or DSAC*/ACE layout)")
    s.add_argument("--intrinsics", help="override: 'fx,fy,cx,cy' or a file with a 3x3 matrix")
    s.set_defaults(func=_cmd_info)

    _add_map_arguments(sub.add_parser("map", help="learn a scene map from a dataset's train split"))

    from .synth import add_synth_arguments  # noqa: E402  (each stage owns its options)
    add_synth_arguments(sub.add_parser("synth", help="render a synthetic posed RGB-D scene in 7-Scenes layout"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except SceneLocError as e:
        print(f"sceneloc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sceneloc: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
