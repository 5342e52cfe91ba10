"""Data layer: read posed RGB(-D) scenes and derive ground-truth scene coordinates.

Two on-disk layouts are read:

* **7-Scenes**: ``seq-XX/frame-XXXXXX.color.{png,jpg}``, ``frame-XXXXXX.depth.png`` (uint16 mm,
  0 and 65535 = no depth), ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world), ``TrainSplit.txt`` /
  ``TestSplit.txt`` (``sequenceN`` lines), optional ``camera-intrinsics.txt`` (3x3): the camera of the
  depth maps, as 7-Scenes documents it; optional ``color-intrinsics.txt`` (3x3): the colour camera's,
  when it differs. 7-Scenes' own Kinect depth camera (585 px) implies its colour camera (525 px).
  Depth maps of another camera are resampled onto the colour pixel grid as they are read.
* **DSAC*/ACE**: ``train|test/rgb/*``, ``poses/*.txt`` (4x4 camera-to-world), ``calibration/*.txt``
  (one focal length, principal point at the image centre, or a 3x3 matrix), optional ``depth/*``;
  files are paired by sorted name.

Single files are read by :mod:`sceneloc.data.readers`; every problem with a file raises
:class:`SceneLocError` naming the file. Poses follow the
convention of :mod:`sceneloc.geometry` (camera-to-world, OpenCV axes) and are projected onto SO(3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from sceneloc.data.readers import (
    IMAGE_SUFFIXES,
    check_image_file,
    image_header,
    read_depth,
    read_image,
    read_intrinsics,
    read_pose,
    register_depth,
)
from sceneloc.errors import SceneLocError
from sceneloc.geometry import (
    backproject,
    intrinsics_matrix,
    pixel_grid,
    scale_intrinsics,
)
from sceneloc.validation import check_intrinsics

#: 7-Scenes' Kinect depth camera (the dataset's documented intrinsics), the default when a dataset has none.
KINECT_DEPTH_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
#: 7-Scenes' Kinect colour camera (what DSAC* and ACE use for its images): its depth maps are not
#: registered to the colour images, so the loader registers them (measured in
#: docs/history/2026-11-29-registered-depth.md).
KINECT_COLOUR_INTRINSICS = (525.0, 525.0, 320.0, 240.0)
KINECT_IMAGE_HW = (480, 640)
#: the 7-Scenes layout's files for the depth camera and the colour camera
INTRINSICS_FILES = ("camera-intrinsics.txt", "color-intrinsics.txt")


def evenly_spaced(n: int, count: int | None) -> np.ndarray:
    """Indices of ``count`` items evenly spread over ``n`` (all of them when ``count`` is None or
    at least ``n``), first and last included, in order, without repeats."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(count, 1)).round().astype(int))


# ------------------------------------------------------------------------------------- frames


@dataclass
class Frame:
    """One posed image of a scene. Paths are absolute; ``name`` is relative to the dataset root."""
    name: str
    image_path: Path
    pose: np.ndarray            # (4, 4) camera-to-world
    K: np.ndarray               # (3, 3) at full resolution
    depth_path: Path | None = None
    depth_K: np.ndarray | None = None   # (3, 3) the depth camera's when it is not K (depth gets registered)
    # pose length units per metre of this frame's depth: load_depth multiplies by it (MappingConfig.depth_to_pose_scale)
    depth_to_pose_scale: float = 1.0

    def load_image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB."""
        return read_image(self.image_path)

    def load_depth(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """``(H, W)`` metres (times ``depth_to_pose_scale``: pose units), 0 = no depth, on the image's pixel
        grid (registered when ``depth_K`` is set)."""
        if self.depth_path is None:
            raise SceneLocError(f"{self.image_path}: missing depth (no depth map for this frame)")
        depth = read_depth(self.depth_path, shape)
        depth = depth if self.depth_K is None else register_depth(depth, self.depth_K, self.K, depth.shape)
        return depth if self.depth_to_pose_scale == 1.0 else depth * np.float32(self.depth_to_pose_scale)

    def load(self, need_depth: bool = True) -> FrameData:
        image = self.load_image()
        depth = self.load_depth(image.shape[:2]) if need_depth or self.depth_path else None
        return FrameData(self.name, image, depth, self.pose, self.K)


@dataclass
class FrameData:
    """A decoded frame: image ``(H, W, 3)`` uint8, depth ``(H, W)`` metres (0 = none) or None."""
    name: str
    image: np.ndarray
    depth: np.ndarray | None
    pose: np.ndarray
    K: np.ndarray

    @property
    def depth_valid(self) -> np.ndarray:
        """``(H, W)`` bool: pixels with a depth measurement (none in a frame without a depth map)."""
        if self.depth is None:
            return np.zeros(self.image.shape[:2], dtype=bool)
        return self.depth > 0

    def scene_coordinates(self, factor: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground-truth scene coordinates at full resolution or reduced by an integer ``factor``.

        Returns ``coords (h, w, 3)`` float32 world points, ``valid (h, w)`` and the intrinsics
        ``K (3, 3)`` of the reduced grid. Output pixel ``j`` covers full-resolution pixels
        ``[f j, f j + f - 1]``; its point lies on the ray through that block's exact centre at the
        depth of the pixel nearest to it, so projecting it with the reduced K lands exactly on ``j``.
        """
        if self.depth is None:
            raise SceneLocError(f"{self.name}: missing depth, cannot compute ground-truth scene coordinates")
        return scene_coordinates(self.depth, self.pose, self.K, factor)


def scene_coordinates(depth: np.ndarray, pose: np.ndarray, K: np.ndarray,
                      factor: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points ``X = R x + t`` (paper eq. 1) from depth ``(H, W)``; see FrameData.scene_coordinates."""
    H, W = depth.shape
    h, w = H // factor, W // factor
    K_out = scale_intrinsics(K, 1.0 / factor)
    d = depth[factor // 2::factor, factor // 2::factor][:h, :w]
    uv_full = pixel_grid(h, w) * factor + (factor - 1) / 2.0  # exact block centres
    x_cam = backproject(uv_full, d.astype(np.float64), K)
    X = x_cam @ pose[:3, :3].T + pose[:3, 3]
    valid = d > 0
    X[~valid] = 0.0
    return X.astype(np.float32), valid, K_out


# -------------------------------------------------------------------------------------- scenes


@dataclass
class SceneStats:
    frames: dict[str, int]
    image_size: tuple[int, int]           # (H, W)
    has_depth: bool
    valid_depth_share: float
    extent_min: np.ndarray                # (3,) robust bounding box of the scene coordinates
    extent_max: np.ndarray
    center: np.ndarray                    # (3,) mean scene coordinate
    diameter: float                       # diagonal of the robust bounding box, metres

    @property
    def tukey_c(self) -> float:
        """The paper's Tukey constant: half the scene diameter."""
        return self.diameter / 2.0


#: a dataset's word on whose camera its poses are (``POSE_CAMERA_FILE``): a depth tracker's or the colour camera's
POSE_CAMERAS = ("depth", "colour")
POSE_CAMERA_FILE = "pose-camera.txt"


@dataclass
class Scene:
    """A dataset on disk: its frames per split and its camera intrinsics."""
    root: Path
    layout: str                           # "7scenes" or "dsacstar"
    splits: dict[str, list[Frame]] = field(default_factory=dict)

    @cached_property
    def pose_camera(self) -> str | None:
        """Whose camera the poses are, as the dataset's ``pose-camera.txt`` says (``depth`` or ``colour``;
        written by ``sceneloc import colmap`` and ``sfm``); None where it says nothing."""
        path = self.root / POSE_CAMERA_FILE
        if not path.is_file():
            return None
        word = path.read_text(errors="replace").strip()
        if word not in POSE_CAMERAS:
            raise SceneLocError(f"{path}: says {word[:40]!r}; it must hold one word, {' or '.join(POSE_CAMERAS)}")
        return word

    def frames(self, split: str) -> list[Frame]:
        if split not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise SceneLocError(f"{self.root}: unknown split {split!r} (this dataset has: {have})")
        if not self.splits[split]:
            raise SceneLocError(f"{self.root}: split {split!r} is empty")
        return self.splits[split]

    @cached_property
    def image_size(self) -> tuple[int, int]:
        for frames in self.splits.values():
            if frames:
                return tuple(frames[0].load_image().shape[:2])
        raise SceneLocError(f"{self.root}: no frames")

    def statistics(self, max_frames: int = 60, factor: int = 4) -> SceneStats:
        """Frames per split, valid-depth share and the extent of the training split's scene coordinates
        (from up to ``max_frames`` evenly spaced frames at 1/factor resolution)."""
        counts = {k: len(v) for k, v in self.splits.items()}
        split = "train" if self.splits.get("train") else next((k for k, v in self.splits.items() if v), None)
        if split is None:
            raise SceneLocError(f"{self.root}: no frames")
        frames = self.splits[split]
        picks = [frames[i] for i in evenly_spaced(len(frames), max_frames)]
        # the frames that have depth give the extent: one frame without depth must not shrink it to the
        # camera centres' (camera centres only when no frame has depth)
        with_depth = [f for f in picks if f.depth_path is not None]
        has_depth = len(with_depth) == len(picks)
        if with_depth:
            pts, shares = [], []
            for f in with_depth:
                fd = f.load()
                X, valid, _ = fd.scene_coordinates(factor)
                pts.append(X[valid])
                shares.append(float(fd.depth_valid.mean()))
            P = np.concatenate(pts)
            if len(P) == 0:
                raise SceneLocError(f"{self.root}: no valid depth in the {split} split")
            share = float(np.mean(shares))
        else:  # RGB-only: the camera centres are the best extent estimate we have
            P = np.stack([f.pose[:3, 3] for f in frames])
            share = 0.0
        lo, hi = np.percentile(P, 0.5, axis=0), np.percentile(P, 99.5, axis=0)
        return SceneStats(counts, self.image_size, has_depth, share, lo, hi, P.mean(0),
                          float(np.linalg.norm(hi - lo)))


_SEQ_RE = re.compile(r"^seq-?(\d+)$")
_FRAME_RE = re.compile(r"^(frame-\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)


def check_frames(frames: list[Frame]) -> None:
    """The per-file checks of ``sceneloc map`` (and ``sceneloc check``, which runs exactly these)
    before any work: every image and depth map is a readable file, each depth map a single-channel
    16-bit image of its image's size, each principal point inside its image. Reads file headers only."""
    for f in frames:
        h, w, _, _ = image_header(f.image_path)
        check_intrinsics(f.K, (h, w), f"{f.image_path}: intrinsics")
        if f.depth_path is None:
            continue
        dh, dw, channels, bits = image_header(f.depth_path, "depth map")
        if channels != 1 or bits != 16:
            raise SceneLocError(f"{f.depth_path}: depth must be a single-channel uint16 PNG in millimetres, "
                                f"got {channels} channel(s) of {bits} bits")
        if (dh, dw) != (h, w):
            raise SceneLocError(f"{f.depth_path}: depth map is {dw}x{dh} but its image is {w}x{h}")


def _read_split_file(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SceneLocError(f"{path}: cannot read split file ({e})") from None
    seqs = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"sequence\s*(\d+)", line, flags=re.IGNORECASE)
        if not m:
            raise SceneLocError(f"{path}: malformed split file (expected 'sequenceN' lines, got {line!r})")
        seqs.append(int(m.group(1)))
    if not seqs:
        raise SceneLocError(f"{path}: empty split (the file lists no 'sequenceN' lines)")
    return seqs


def is_kinect_depth_camera(K: np.ndarray, image_hw: tuple[int, ...] | None) -> bool:
    """True if ``K (3, 3)`` is 7-Scenes' Kinect depth camera and ``image_hw`` its 640x480 image size."""
    return (image_hw is not None and tuple(image_hw) == KINECT_IMAGE_HW
            and np.array_equal(np.asarray(K, dtype=np.float64), intrinsics_matrix(*KINECT_DEPTH_INTRINSICS)))


def _any_image_hw(root: Path) -> tuple[int, ...] | None:
    """``(H, W)`` of one colour image of a 7-Scenes-layout folder, None if it has none."""
    image = next(root.glob("seq-*/frame-*.color.*"), None)
    return None if image is None else read_image(image).shape[:2]


def seven_scenes_cameras(root: Path, K_override: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The colour camera ``K (3, 3)`` of a 7-Scenes-layout dataset and its depth camera ``(3, 3)``, or
    None where the depth maps are registered to the images (one camera). ``K_override`` is both.
    The Kinect's depth camera on 640x480 images, without a colour-camera file, means 7-Scenes' Kinect."""
    if K_override is not None:
        return K_override, None
    depth_file, colour_file = (root / name for name in INTRINSICS_FILES)
    K_depth = read_intrinsics(depth_file) if depth_file.exists() else intrinsics_matrix(*KINECT_DEPTH_INTRINSICS)
    if colour_file.exists():
        K = read_intrinsics(colour_file)
    elif is_kinect_depth_camera(K_depth, _any_image_hw(root)):   # one image decoded, once per dataset
        K = intrinsics_matrix(*KINECT_COLOUR_INTRINSICS)
    else:
        K = K_depth
    return K, None if np.array_equal(K, K_depth) else K_depth


def _load_7scenes(root: Path, K_override: np.ndarray | None) -> Scene:
    K, K_depth = seven_scenes_cameras(root, K_override)
    seq_dirs = {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := _SEQ_RE.match(p.name))}
    scene = Scene(root, "7scenes")
    for split, fname in (("train", "TrainSplit.txt"), ("test", "TestSplit.txt")):
        split_file = root / fname
        if not split_file.exists():
            continue
        frames: list[Frame] = []
        for n in _read_split_file(split_file):
            if n not in seq_dirs:
                raise SceneLocError(f"{split_file}: sequence{n} listed but folder seq-{n:02d} does not exist")
            seq = seq_dirs[n]
            n_before = len(frames)
            for img in sorted(seq.iterdir()):
                m = _FRAME_RE.match(img.name)
                if not m:
                    continue
                stem = seq / m.group(1)
                depth = Path(f"{stem}.depth.png")
                check_image_file(img)
                if depth.exists():
                    check_image_file(depth, "depth map")
                frames.append(Frame(str(img.relative_to(root)), img, read_pose(Path(f"{stem}.pose.txt")), K,
                                    depth if depth.exists() else None, K_depth))
            if len(frames) == n_before:
                raise SceneLocError(f"{seq}: empty split folder (no frame-XXXXXX.color.png/jpg images), "
                                    f"listed in {split_file.name}")
        scene.splits[split] = frames
    if not scene.splits:
        raise SceneLocError(f"{root}: 7-Scenes layout without TrainSplit.txt or TestSplit.txt")
    return scene


def _frame_key(path: Path) -> str:
    """``x.color.jpg``, ``x.depth.png``, ``x.png`` -> ``x``: what pairs an image with its depth map."""
    stem = path.name[: -len(path.suffix)]
    for tail in (".color", ".depth"):
        if stem.endswith(tail):
            return stem[: -len(tail)]
    return stem


def _pair_partial_depth(d: Path, images: list[Path], depths: list[Path]) -> list[Path | None]:
    """Depth maps for some of the images only (e.g. an imported capture): pair them by name, None
    where an image has none; a depth map that matches no image is an error."""
    by_key = {_frame_key(p): p for p in depths}
    paired = [by_key.pop(_frame_key(img), None) for img in images]
    if by_key:
        raise SceneLocError(f"{d / 'depth'}: {len(depths)} depth maps for {len(images)} images "
                            f"({next(iter(by_key.values())).name} matches no image in {d / 'rgb'})")
    return paired


def _load_dsacstar(root: Path, K_override: np.ndarray | None) -> Scene:
    scene = Scene(root, "dsacstar")
    for split in ("train", "test"):
        d = root / split
        if not (d / "rgb").is_dir():
            continue
        images = sorted(p for p in (d / "rgb").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SceneLocError(f"{d / 'rgb'}: empty split folder (no .png/.jpg images)")
        poses = sorted((d / "poses").glob("*.txt")) if (d / "poses").is_dir() else []
        calibs = sorted((d / "calibration").glob("*.txt")) if (d / "calibration").is_dir() else []
        depth_files = sorted((d / "depth").glob("*.png")) if (d / "depth").is_dir() else []
        if len(poses) != len(images):
            raise SceneLocError(f"{d / 'poses'}: {len(poses)} pose files for {len(images)} images in {d / 'rgb'}")
        if K_override is None and len(calibs) != len(images):
            raise SceneLocError(f"{d / 'calibration'}: {len(calibs)} calibration files for {len(images)} images "
                                f"(or pass --intrinsics)")
        if not depth_files and (d / "depth").is_dir() and any((d / "depth").iterdir()):
            raise SceneLocError(f"{d / 'depth'}: no .png depth maps (depth must be uint16 PNG in millimetres)")
        # one entry per image (None: no depth map) when only some images have one
        depths: list[Path | None] = (_pair_partial_depth(d, images, depth_files)
                                     if depth_files and len(depth_files) != len(images) else list(depth_files))
        frames: list[Frame] = []
        size = None
        for i, img in enumerate(images):
            check_image_file(img)
            depth_file = depths[i] if depths else None
            if depth_file is not None:
                check_image_file(depth_file, "depth map")
            if K_override is not None:
                K = K_override
            else:
                if size is None:
                    size = read_image(img).shape[:2]
                K = read_intrinsics(calibs[i], size)
            frames.append(Frame(str(img.relative_to(root)), img, read_pose(poses[i]), K, depth_file))
        scene.splits[split] = frames
    return scene


def load_scene(path: str | Path, intrinsics: np.ndarray | None = None) -> Scene:
    """Open a dataset directory in 7-Scenes or DSAC*/ACE layout.

    Args:
        path: the dataset root.
        intrinsics: optional ``(3, 3)`` K overriding what the dataset says (or 7-Scenes' default), for
            the images and their depth maps alike.
    """
    root = Path(path)
    if not root.is_dir():
        raise SceneLocError(f"{root}: dataset directory {'is not a directory' if root.exists() else 'does not exist'}")
    if (root / "TrainSplit.txt").exists() or (root / "TestSplit.txt").exists():
        return _load_7scenes(root, intrinsics)
    if (root / "train" / "rgb").is_dir() or (root / "test" / "rgb").is_dir():
        return _load_dsacstar(root, intrinsics)
    raise SceneLocError(f"{root}: neither 7-Scenes layout (TrainSplit.txt, seq-XX/) "
                        f"nor DSAC*/ACE layout (train/rgb, test/rgb)")


def sample_nearest(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Values of ``image (H, W, ...)`` at the pixels nearest to ``uv (..., 2)`` (clamped to the border)."""
    col = np.clip(np.rint(uv[..., 0]).astype(int), 0, image.shape[1] - 1)
    row = np.clip(np.rint(uv[..., 1]).astype(int), 0, image.shape[0] - 1)
    return image[row, col]


def camera_points(depth: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points ``(n, 3)`` of a query's depth map ``(H, W)`` (metres, 0 = none) at the
    pixels ``uv (n, 2)``; NaN where there is no depth, so pose estimation drops those matches."""
    z = sample_nearest(np.asarray(depth, dtype=np.float64), uv)
    cam = backproject(uv, z, K)
    cam[z <= 0] = np.nan
    return cam


def scene_coordinates_at(depth: np.ndarray, pose: np.ndarray, K: np.ndarray,
                         uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth scene coordinates at arbitrary full-resolution pixel centres ``uv (..., 2)``.

    Each point lies on the ray through its exact ``uv`` at the depth of the nearest pixel, so it
    projects back onto ``uv``. Returns ``coords (..., 3)`` float32 and ``valid (...)``.
    """
    H, W = depth.shape
    inside = (uv[..., 0] > -0.5) & (uv[..., 0] < W - 0.5) & (uv[..., 1] > -0.5) & (uv[..., 1] < H - 0.5)
    d = np.where(inside, sample_nearest(depth, uv), 0.0).astype(np.float64)
    X = backproject(uv.astype(np.float64), d, K) @ pose[:3, :3].T + pose[:3, 3]
    valid = d > 0
    X[~valid] = 0.0
    return X.astype(np.float32), valid
