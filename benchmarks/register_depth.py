"""A 7-Scenes view whose depth maps are registered to the colour camera (a measurement aid, session 7).

7-Scenes colour and depth are not registered: the dataset's intrinsics (585 px focal length) are the
depth camera's, while the Kinect colour camera's focal length is ~525 px (what DSAC*/ACE use for its
images). This writes a copy of DATASET in which every depth map is resampled onto the colour pixel grid
(each colour pixel takes the depth of the depth pixel on the same ray; same principal point, the
~2.5 cm baseline between the two cameras ignored) and `camera-intrinsics.txt` holds the colour
camera's; colour images and poses are symbolic links.

Usage:
    python benchmarks/register_depth.py ../shared/data/7scenes-redkitchen /tmp/rk_reg [--colour-focal 525]

The depth camera is the dataset's own intrinsics (`sceneloc.data.load_scene`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

from sceneloc.data import load_scene


def registration_maps(K_depth: np.ndarray, colour_focal: float, hw: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps ``(H, W)`` float32: the depth pixel on each colour pixel's ray (the colour
    camera has the depth camera's principal point and focal length ``colour_focal``)."""
    v, u = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
    (fx, cx), (fy, cy) = K_depth[0, [0, 2]], K_depth[1, [1, 2]]
    return ((cx + (u - cx) * fx / colour_focal).astype(np.float32),
            (cy + (v - cy) * fy / colour_focal).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--colour-focal", type=float, default=525.0)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; choose another folder")
    args.out.mkdir(parents=True)
    for name in ("TrainSplit.txt", "TestSplit.txt"):
        shutil.copy(args.dataset / name, args.out / name)
    K_depth = next(fr for frames in load_scene(args.dataset).splits.values() for fr in frames).K
    f, (cx, cy) = args.colour_focal, K_depth[:2, 2]
    (args.out / "camera-intrinsics.txt").write_text(f"{f} 0 {cx}\n0 {f} {cy}\n0 0 1\n")
    maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}   # per depth-map size, built once
    for seq in sorted(args.dataset.glob("seq-*")):
        out = args.out / seq.name
        out.mkdir()
        for p in sorted(seq.iterdir()):
            if p.name.endswith(".depth.png"):
                depth = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                if depth.shape not in maps:
                    maps[depth.shape] = registration_maps(K_depth, f, depth.shape)
                cv2.imwrite(str(out / p.name), cv2.remap(depth, *maps[depth.shape], cv2.INTER_NEAREST,
                                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0))
            else:
                (out / p.name).symlink_to(p.resolve())
    print(f"{args.out}: depth registered to a {f:g} px colour camera")


if __name__ == "__main__":
    main()
