"""Synthetic posed RGB-D scenes in 7-Scenes layout (``sceneloc synth``): the embedded default dataset.

A scene is a list of textured planar rectangles (:class:`Quad`): the walls, floor and ceiling of
a room, furniture built from boxes, posters, a staircase. Textures are photographs shipped with
scikit-image (astronaut, coffee, rocket, ...), repeated patterns (bricks, tiles, book spines,
identical cabinet doors) and a few nearly uniform, low-texture surfaces.

Rendering is exact ray casting in numpy, one quad at a time inside its screen-space bounding box:
the ray through pixel centre ``(u, v)`` is ``r = ((u - cx) / fx, (v - cy) / fy, 1)`` in camera
coordinates (OpenCV axes, pixel (0, 0) is the centre of the top-left pixel, as in
:mod:`sceneloc.geometry`), it meets the quad's plane at depth ``z = n.o / n.r`` and the quad's
own coordinates ``(a, b)`` in ``[0, 1]^2`` decide whether it is hit; a z-buffer keeps the nearest
hit. So without sensor noise the stored depth (uint16 millimetres, z along the optical axis) and
the stored pose agree to rendering precision (half a millimetre of quantisation).

World frame: metres, z up, floor at ``z = 0``. Poses are 4x4 camera-to-world.

Sensor effects, each switchable (:class:`SensorOptions`): Kinect-like depth noise growing with
distance, missing depth (out of range, object edges, grazing angles, random blobs) stored as 0,
image noise, exposure and lighting change between sequences, mild motion blur.

Presets (:data:`PRESETS`; room size, camera region):

* ``living`` (the demo's scene, ``sceneloc demo``): 4.4 x 3.8 x 2.6 m living room full of
  furniture, pictures and clutter, a different texture on every wall; the camera stays in the
  middle (about 1.6 x 1.4 x 0.6 m), at least ~0.8 m from what it sees, and looks at furniture
  and pictures 1-3.2 m away in one half of the room (bookshelf, TV, sofa), as a real capture
  films part of a room. A fair stand-in for a real capture.
* ``room`` (``sceneloc synth``'s default): 3.2 x 3.0 x 2.5 m living room with posters, table,
  cabinet, bookshelf, sofa and bare walls; the camera moves in about 2.1 x 1.9 x 0.7 m and sees
  close-ups of brick and plain wall. Moderate to hard.
* ``desk``: 2.2 x 1.8 x 2.4 m study, a desk corner seen from a chair; about 1 x 0.6 x 0.5 m of
  camera motion (like 7-Scenes' Heads). Small and easy.
* ``kitchen``: 4.4 x 3.4 x 2.6 m, six identical cabinet doors, low-texture walls and fridge,
  depth up to ~4.5 m; about 3.2 x 2.0 x 0.7 m of camera motion. Large and harder.
* ``stairs``: 12 identical steps between brick walls in a 1.6 m wide stairwell, the camera
  climbing with them (like 7-Scenes' Stairs). Repetitive and hard.
* ``floor`` (synth/floor.py): the five rooms above side by side along a corridor, about 24 x 6 m;
  training and test walks go through one space each, in turn (``synth.json``'s ``sequence_rooms``).
  Large: for partitioned maps (docs/scale.md).

Everything is deterministic from ``seed``: the scene itself depends only on the preset; each
sequence draws its trajectory and noise from its own random stream, test sequences from a stream
separate from the training ones. Test sequences are separate walks through the space the training walks
mapped (``test_walk="inside"``: every waypoint is a view near a training frame), or anywhere in
the camera region (``"free"``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from sceneloc.data.dataset import INTRINSICS_FILES, KINECT_DEPTH_INTRINSICS, evenly_spaced
from sceneloc.data.readers import parse_intrinsics
from sceneloc.errors import SceneLocError, refuse_to_overwrite
from sceneloc.geometry import intrinsics_matrix
from sceneloc.progress import progress as progress_bar
from sceneloc.synth.floor import PRESETS, make_scene

# Re-exported: the scene descriptions, the renderer and the trajectories moved to their own modules, and their
# public names stay importable from here (``sceneloc.synth.dataset.Renderer``, ``sceneloc.synth.dataset.look_at``, ...).
from sceneloc.synth.render import (  # noqa: F401
    DEPTH_RANGE,
    NEAR,
    PHOTOS,
    TEXTURE_MAX_SIDE,
    Atlas,
    Lighting,
    Render,
    Renderer,
    SensorOptions,
    build_atlas,
    depth_to_mm,
    finish_image,
    motion_blur_kernel,
    texture_image,
)
from sceneloc.synth.scenes import DEFAULT_PRESET, Quad, Scene, box, rect, table  # noqa: F401
from sceneloc.synth.trajectory import free_space, look_at, sample_scene_points, sample_trajectory, smooth_wobble  # noqa: F401
from sceneloc.validation import check_intrinsics, check_output_path

#: Kinect intrinsics of 7-Scenes at 640x480, the default camera.
DEFAULT_SIZE = (640, 480)
DEFAULT_INTRINSICS = KINECT_DEPTH_INTRINSICS
#: Huffman-only PNG: lossless and deterministic, twice as fast as the default for noisy images
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]



def format_matrix(T: np.ndarray) -> str:
    """A pose (4x4) or intrinsics (3x3) file: one line per row, ``%.9e`` numbers."""
    return "".join(" ".join(f"{v:.9e}" for v in row) + "\n" for row in T)


def _as_written(T: np.ndarray) -> np.ndarray:
    """The pose exactly as it will read back from its file, so pixels and file agree to the last digit."""
    return np.array([float(v) for v in format_matrix(T).split()]).reshape(4, 4)


def _sequence_lighting(opts: SensorOptions, rng: np.random.Generator, n: int) -> list[Lighting]:
    """Per-frame lighting of one sequence: random exposure, colour cast and lamp strength, plus a
    slow auto-exposure drift of a few percent."""
    if not opts.lighting_change:
        return [Lighting() for _ in range(n)]
    gain = rng.uniform(0.75, 1.25)
    b, g, r = (float(c) for c in rng.uniform(0.9, 1.1, 3))
    lamp = rng.uniform(0.4, 1.2)
    drift = 1 + smooth_wobble(rng, np.linspace(0, 1, n), 1, 0.03)[:, 0]
    return [Lighting(float(gain * d), (b, g, r), float(lamp)) for d in drift]


MAX_BLUR_PX = 3.0


def exposure_motion(renderer: Renderer, depth: np.ndarray, poses: list[np.ndarray], i: int,
                    travel: float) -> np.ndarray:
    """Image motion ``(2,)`` in pixels during frame ``i``'s exposure: the motion between its
    neighbours per metre walked, times ``travel``, the metres walked while the shutter is open
    (a hand-held camera at 0.3 m/s and 1/60 s moves 5 mm); at most ``MAX_BLUR_PX`` (mild blur)."""
    j0, j1 = max(i - 1, 0), min(i + 1, len(poses) - 1)
    if j0 == j1:
        return np.zeros(2)
    walked = float(np.linalg.norm(poses[j1][:3, 3] - poses[j0][:3, 3]))
    flow = _image_flow(renderer, depth, poses[j0], poses[j1]) * travel / max(walked, 1e-3)
    length = float(np.linalg.norm(flow))
    return flow * min(1.0, MAX_BLUR_PX / max(length, 1e-9))


def _image_flow(renderer: Renderer, depth: np.ndarray, T_a: np.ndarray, T_b: np.ndarray) -> np.ndarray:
    """Image motion ``(2,)`` in pixels of the centre pixel's surface point from pose ``T_a`` to ``T_b``."""
    H, W = depth.shape
    K = renderer.K
    z = float(np.median(depth[H // 2 - 2:H // 2 + 3, W // 2 - 2:W // 2 + 3])) or 2.0
    uv = np.array([W // 2, H // 2], np.float64)
    x = np.array([(uv[0] - K[0, 2]) / K[0, 0] * z, (uv[1] - K[1, 2]) / K[1, 1] * z, z])
    X = T_a[:3, :3] @ x + T_a[:3, 3]
    xb = T_b[:3, :3].T @ (X - T_b[:3, 3])
    if xb[2] <= NEAR:
        return np.zeros(2)
    return K[:2, :2] @ (xb[:2] / xb[2]) + K[:2, 2] - uv


# ======================================================================================== generator


def render_frame(renderer: Renderer, poses: list[np.ndarray], i: int, light: Lighting, travel: float,
                 sensor: SensorOptions, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` of a sequence with camera-to-world ``poses``: colour ``(H, W, 3)`` uint8 BGR
    and depth ``(H, W)`` uint16 mm (0 = none), with the sensor effects ``sensor`` asks for."""
    T = poses[i]
    r = renderer.render(T)
    color = renderer.shade(r, T, light)
    image = finish_image(color, sensor, rng, exposure_motion(renderer, r.depth, poses, i, travel))
    return image, depth_to_mm(r.depth, T, r, renderer, sensor, rng)


def _check_out_dir(out: Path, force: bool) -> None:
    """Refuse to write into a folder holding other files unless ``force``; with ``force`` remove
    what an earlier run wrote (stale frames of longer sequences would otherwise be read)."""
    if not refuse_to_overwrite(out, force):
        return
    for p in sorted(out.iterdir()):
        if p.is_dir() and re.fullmatch(r"seq-\d+", p.name):
            shutil.rmtree(p)
        elif p.name in ("TrainSplit.txt", "TestSplit.txt", *INTRINSICS_FILES, "synth.json"):
            p.unlink()


def _default_intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """Kinect intrinsics for ``width x height``: the same horizontal field of view, square pixels,
    the principal point where it is at 640x480 (pixel centres map as in scale_intrinsics)."""
    sx, sy = width / DEFAULT_SIZE[0], height / DEFAULT_SIZE[1]
    fx, fy, cx, cy = DEFAULT_INTRINSICS
    return fx * sx, fy * sx, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def walk_space(scene: Scene, index: int) -> Scene:
    """The space the ``index``-th training (or test) walk of ``scene`` goes through: its rooms in turn,
    or the whole scene when it has none."""
    return scene.rooms[index % len(scene.rooms)] if scene.rooms else scene


#: where test walks go (see generate)
TEST_WALKS = ("inside", "free")


def generate(out_dir: str | Path, preset: str = DEFAULT_PRESET, seed: int = 0, frames: int = 60,
             train_sequences: int = 3, test_sequences: int = 1, width: int = DEFAULT_SIZE[0],
             height: int = DEFAULT_SIZE[1],
             intrinsics: tuple[float, float, float, float] | None = None,
             sensor: SensorOptions = SensorOptions(), force: bool = False,
             preview: str | Path | None = None, progress: bool = True, test_walk: str = "inside") -> Path:
    """Render a posed RGB-D dataset in 7-Scenes layout and return its root.

    Writes ``seq-XX/frame-XXXXXX.{color.png, depth.png, pose.txt}`` (colour ``(H, W, 3)`` uint8,
    depth ``(H, W)`` uint16 mm with 0 = none, pose 4x4 camera-to-world), ``TrainSplit.txt`` (the
    first ``train_sequences``), ``TestSplit.txt`` (the rest, if any), ``camera-intrinsics.txt`` and
    ``color-intrinsics.txt`` (3x3, the same camera: the depth is registered) and ``synth.json`` (the
    options). The same arguments give byte-identical files.

    Args:
        out_dir: output folder; must be absent or empty unless ``force``.
        preset: one of :data:`PRESETS`.
        seed: trajectories and noise; the scene depends on the preset only.
        frames: frames per sequence.
        width, height: image size; ``intrinsics`` ``(fx, fy, cx, cy)`` default to the Kinect's,
            rescaled to this size.
        sensor: which imperfections to simulate (:meth:`SensorOptions.clean` for exact data).
        preview: optional PNG path for a contact sheet of colour and depth frames.
        progress: show progress on stderr (a bar on a terminal, a few lines otherwise).
        test_walk: ``inside`` (test walks are separate walks whose waypoints are views near
            training frames, as a test capture of a mapped room is) or ``free`` (anywhere in the
            camera region, views the training walks may never have seen).
    """
    check_output_path(out_dir, "dir")
    scene = make_scene(preset)
    if frames < 1:
        raise SceneLocError(f"--frames {frames}: need at least 1 frame per sequence")
    if train_sequences < 1 or test_sequences < 0:
        raise SceneLocError(f"--train-sequences {train_sequences} / --test-sequences {test_sequences}: "
                            "need at least 1 training sequence and no negative count")
    if train_sequences + test_sequences > 99:
        raise SceneLocError("--train-sequences + --test-sequences: at most 99 sequences")
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise SceneLocError(f"--width {width} --height {height}: image size must be 16..8192 pixels")
    fx, fy, cx, cy = intrinsics if intrinsics is not None else _default_intrinsics(width, height)
    check_intrinsics(intrinsics_matrix(fx, fy, cx, cy), (height, width), f"--intrinsics {fx:g},{fy:g},{cx:g},{cy:g}")
    if test_walk not in TEST_WALKS:
        raise SceneLocError(f"--test-walk {test_walk!r}: choose from {', '.join(TEST_WALKS)}")
    if preview is not None and Path(preview).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise SceneLocError(f"--preview {preview}: the contact sheet must be a .png or .jpg file")
    out = Path(out_dir)
    _check_out_dir(out, force)
    out.mkdir(parents=True, exist_ok=True)

    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    renderer = Renderer(scene, K, width, height)
    n_seq = train_sequences + test_sequences
    sheet: list[list[np.ndarray]] = []    # preview tiles per sequence
    trained: list[np.ndarray] = []        # training poses: where test walks may go
    with progress_bar(total=n_seq * frames, desc=f"synth {preset}", unit="frame", file=sys.stderr,
                      disable=not progress, leave=False) as bar:
        for s in range(n_seq):
            is_test = s >= train_sequences
            # independent streams: (seed, split, index) -> trajectory, lighting, blur, per-frame noise
            ss = np.random.SeedSequence([seed, int(is_test), s])
            traj_ss, light_ss, blur_ss, noise_ss = ss.spawn(4)
            space = walk_space(scene, s - train_sequences if is_test else s)
            anchors = np.stack(trained) if is_test and test_walk == "inside" else None
            if anchors is not None and space is not scene:   # the training views of this room only
                anchors = anchors[free_space(space, anchors[:, :3, 3], slack=0.1)]
            walk = sample_trajectory(space, frames, np.random.default_rng(traj_ss),
                                     anchors if anchors is None or len(anchors) else None)
            poses = [_as_written(T) for T in walk]
            if not is_test:
                trained += poses
            lights = _sequence_lighting(sensor, np.random.default_rng(light_ss), frames)
            travel = np.random.default_rng(blur_ss).uniform(0.003, 0.008)
            seq_dir = out / f"seq-{s + 1:02d}"
            seq_dir.mkdir(exist_ok=True)
            thumbs = []
            picks = set(evenly_spaced(frames, PREVIEW_COLUMNS).tolist())
            for i, (T, frame_ss) in enumerate(zip(poses, noise_ss.spawn(frames), strict=True)):
                image, depth_mm = render_frame(renderer, poses, i, lights[i], travel, sensor,
                                               np.random.default_rng(frame_ss))
                stem = seq_dir / f"frame-{i:06d}"
                cv2.imwrite(f"{stem}.color.png", image, PNG_PARAMS)
                cv2.imwrite(f"{stem}.depth.png", depth_mm, PNG_PARAMS)
                Path(f"{stem}.pose.txt").write_text(format_matrix(T))
                if preview is not None and i in picks:
                    thumbs.append(_thumbnail(image, depth_mm, f"seq-{s + 1:02d} {'test' if is_test else 'train'} #{i}"))
                bar.update(1)
            sheet.append(thumbs)

    (out / "TrainSplit.txt").write_text("".join(f"sequence{s + 1}\n" for s in range(train_sequences)))
    if test_sequences:  # the reader refuses an empty split file
        (out / "TestSplit.txt").write_text("".join(f"sequence{s + 1}\n" for s in range(train_sequences, n_seq)))
    for name in INTRINSICS_FILES:  # depth rendered from the image's camera: registered, one camera
        (out / name).write_text(format_matrix(K))
    meta = {"generator": "sceneloc synth", "preset": preset, "description": scene.description,
            "scene_fingerprint": scene.fingerprint(),
            "seed": seed, "frames_per_sequence": frames, "test_walk": test_walk,
            "train_sequences": [f"seq-{s + 1:02d}" for s in range(train_sequences)],
            "test_sequences": [f"seq-{s + 1:02d}" for s in range(train_sequences, n_seq)],
            "width": width, "height": height, "intrinsics": [fx, fy, cx, cy],
            "sensor": asdict(sensor), "room_size_m": list(scene.size),
            **({"sequence_rooms": {f"seq-{s + 1:02d}": walk_space(scene, s if s < train_sequences else
                                                                  s - train_sequences).name
                                   for s in range(n_seq)}} if scene.rooms else {}),
            "conventions": "world: metres, z up, floor at z=0; pose: 4x4 camera-to-world, OpenCV camera axes; "
                           "depth: uint16 mm along the optical axis, 0 = none"}
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    if preview is not None:
        write_preview(preview, sheet)
    return out


PREVIEW_COLUMNS, PREVIEW_TILE_WIDTH, PREVIEW_MAX_DEPTH = 6, 200, 5.0


def _thumbnail(bgr: np.ndarray, depth_mm: np.ndarray, label: str) -> np.ndarray:
    """A preview tile: the colour image above its depth, colour-mapped (turbo, 0 to
    ``PREVIEW_MAX_DEPTH`` metres, missing depth black)."""
    size = (PREVIEW_TILE_WIDTH, round(PREVIEW_TILE_WIDTH * bgr.shape[0] / bgr.shape[1]))
    c = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    d = cv2.resize(depth_mm, size, interpolation=cv2.INTER_NEAREST)
    dc = cv2.applyColorMap(np.clip(d * (0.255 / PREVIEW_MAX_DEPTH), 0, 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    dc[d == 0] = 0
    cv2.putText(c, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([c, dc])


def write_preview(path: str | Path, rows: list[list[np.ndarray]]) -> None:
    """Contact sheet: one row of :func:`_thumbnail` tiles per sequence."""
    width = max(len(r) for r in rows)
    blank = np.zeros_like(rows[0][0])
    sheet = np.vstack([np.hstack(r + [blank] * (width - len(r))) for r in rows])
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(path), sheet)
    except (OSError, cv2.error):
        ok = False
    if not ok:
        raise SceneLocError(f"{path}: cannot write the preview image (use a .png path in a writable folder)")


# ============================================================================================== CLI


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``sceneloc synth``."""
    p.add_argument("out_dir", metavar="OUT_DIR", help="output dataset folder (7-Scenes layout)")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"scene: {', '.join(PRESETS)} (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="trajectories and noise (default %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames per sequence (default %(default)s)")
    p.add_argument("--train-sequences", type=int, default=3, help="training sequences (default %(default)s)")
    p.add_argument("--test-sequences", type=int, default=1, help="test sequences (default %(default)s)")
    p.add_argument("--width", type=int, default=DEFAULT_SIZE[0], help="image width (default %(default)s)")
    p.add_argument("--height", type=int, default=DEFAULT_SIZE[1], help="image height (default %(default)s)")
    p.add_argument("--intrinsics", help="'fx,fy,cx,cy' (default: Kinect 585,585,320,240 scaled to the size)")
    for name, what in (("depth-noise", "depth noise"), ("holes", "missing depth"), ("image-noise", "image noise"),
                       ("lighting-change", "exposure/lighting change between sequences"),
                       ("blur", "motion blur")):
        p.add_argument(f"--no-{name}", action="store_true", help=f"turn off {what}")
    p.add_argument("--clean", action="store_true", help="turn off all sensor effects (exact depth and poses)")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR (replaces an earlier dataset)")
    p.add_argument("--test-walk", choices=TEST_WALKS, default="inside",
                   help="test walks near the training views (inside, default) or anywhere (free)")
    p.add_argument("--preview", metavar="PNG", help="also write a contact sheet of colour and depth frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> None:
    intr = None
    if args.intrinsics:
        K = parse_intrinsics(args.intrinsics)
        intr = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    sensor = SensorOptions.clean() if args.clean else SensorOptions(
        not args.no_depth_noise, not args.no_holes, not args.no_image_noise,
        not args.no_lighting_change, not args.no_blur)
    out = generate(args.out_dir, args.preset, args.seed, args.frames, args.train_sequences,
                   args.test_sequences, args.width, args.height, intr, sensor, args.force,
                   args.preview, progress=not args.quiet, test_walk=args.test_walk)
    n = args.train_sequences + args.test_sequences
    print(f"wrote {out}: preset {args.preset}, {n} sequences x {args.frames} frames "
          f"({args.train_sequences} train, {args.test_sequences} test)")
    if args.preview:
        print(f"preview {args.preview}")
