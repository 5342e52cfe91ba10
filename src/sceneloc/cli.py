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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneloc", description="Camera relocalization by scene coordinate regression.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"sceneloc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("info", help="print a dataset's splits, intrinsics, extent and diameter")
    s.add_argument("dataset", help="dataset root (7-Scenes or DSAC*/ACE layout)")
    s.add_argument("--intrinsics", help="override: 'fx,fy,cx,cy' or a file with a 3x3 matrix")
    s.set_defaults(func=_cmd_info)

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
