"""Input validation at the edge: every command and the Python API check budgets, intrinsics, depth
maps, output paths and pose-file quaternions here, before any work starts, so that bad input is one
:class:`SceneLocError` line naming the file or option and the problem -- never a hang, a traceback or a
pose computed from numbers nobody meant.

Budgets: a training budget must be a finite number > 0; where a stage can be left out, 0 means "skip
this stage" (``ZERO_SKIPS``). Intrinsics: fx, fy > 0 and finite, principal point inside the image.
Depth: uint16 millimetres (what ``cv2.imread`` gives) or float metres, converted with a scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sceneloc.errors import SceneLocError

#: Mapping-config budgets where 0 is documented to skip the stage (any other value must be > 0).
ZERO_SKIPS = ("confidence_minutes", "calibration_minutes")
#: Mapping-config numbers that must be > 0 (when set; None takes the architecture's default).
POSITIVE = ("minutes", "iterations", "buffer_mb", "buffer_copies", "pixel_batch", "batch_size", "checkpoint_minutes",
            "head_width", "n_k", "input_height", "width", "lr", "depth_to_pose_scale")
#: Depth beyond this many metres is no indoor or handheld sensor's: a unit mistake (mm read as m).
MAX_DEPTH_M = 100.0
#: A quaternion whose norm is further than this from 1 is refused rather than silently normalised.
QUATERNION_NORM_TOLERANCE = 0.01


def option_name(field: str) -> str:
    """The CLI flag of a config field: ``confidence_minutes`` -> ``--confidence-minutes``."""
    return "--" + field.replace("_", "-")


def check_budget(name: str, value: float | int | None, zero_skips: bool = False) -> None:
    """``value`` of option ``name`` is None (default), finite and > 0, or exactly 0 where ``zero_skips``."""
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise SceneLocError(f"{name} {value}: must be a finite number")
    if value == 0 and zero_skips:
        return
    if value <= 0:
        skip = " or 0 to skip this stage" if zero_skips else ""
        raise SceneLocError(f"{name} {value:g}: must be greater than 0{skip}")


def check_config_budgets(config: object, positive: Iterable[str] = POSITIVE,
                         zero_skips: Iterable[str] = ZERO_SKIPS) -> None:
    """Every budget and size field of a config dataclass (``MappingConfig``, ``DSACConfig``) that it has."""
    for name in positive:
        if hasattr(config, name):
            check_budget(option_name(name), getattr(config, name))
    for name in zero_skips:
        if hasattr(config, name):
            check_budget(option_name(name), getattr(config, name), zero_skips=True)
    for minutes in getattr(config, "snapshot_minutes", ()) or ():
        check_budget("--snapshot-minutes", minutes)
    seed = getattr(config, "seed", None)
    if seed is not None and not (isinstance(seed, int) and seed >= 0):
        raise SceneLocError(f"--seed {seed}: must be a non-negative integer")


# ------------------------------------------------------------------------------------ intrinsics


def check_intrinsics(K: np.ndarray, image_hw: tuple[int, ...] | None = None, source: str = "intrinsics") -> np.ndarray:
    """``K (3, 3)`` float64 after checking: finite, fx, fy > 0, last row 0 0 1 and, given the image
    size ``(H, W)``, principal point inside the image. ``source`` names the file or option."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise SceneLocError(f"{source}: intrinsics must be a 3x3 camera matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise SceneLocError(f"{source}: intrinsics hold nan or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SceneLocError(f"{source}: focal lengths must be positive (fx={K[0, 0]:g}, fy={K[1, 1]:g})")
    if not np.allclose(K[2], [0, 0, 1]):
        raise SceneLocError(f"{source}: not a camera matrix (last row must be 0 0 1)")
    if image_hw is not None:
        h, w = image_hw[:2]
        cx, cy = K[0, 2], K[1, 2]
        if not (0 <= cx <= w and 0 <= cy <= h):
            raise SceneLocError(f"{source}: principal point ({cx:g}, {cy:g}) lies outside the {w}x{h} image "
                                f"(intrinsics of another image size?)")
    return K


def parse_intrinsics_values(spec: str) -> np.ndarray:
    """``'fx,fy,cx,cy'`` (exactly four finite numbers, fx, fy > 0) -> K ``(3, 3)``."""
    try:
        vals = [float(v) for v in spec.replace(" ", "").split(",")]
    except ValueError:
        raise SceneLocError(f"--intrinsics {spec!r}: expected 'fx,fy,cx,cy' or a file with a 3x3 matrix") from None
    if len(vals) != 4:
        raise SceneLocError(f"--intrinsics {spec!r}: expected exactly four numbers 'fx,fy,cx,cy' (got {len(vals)}) "
                            f"or a file with a 3x3 matrix")
    fx, fy, cx, cy = vals
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return check_intrinsics(K, source=f"--intrinsics {spec!r}")


# ----------------------------------------------------------------------------------------- depth


def depth_in_metres(depth: np.ndarray, source: str = "depth", depth_scale_m: float | None = None) -> np.ndarray:
    """``(H, W)`` float32 metres (0 = no measurement) from a depth array.

    uint16 is read as millimetres (0 and 65535 invalid) unless ``depth_scale_m`` (metres per unit)
    says otherwise; floats are metres times ``depth_scale_m`` (default 1). Negative or non-finite
    values become 0 (no measurement). An all-zero map, or one that reads beyond ``MAX_DEPTH_M``
    (millimetres given as metres), is an error naming ``source``.
    """
    d = np.asarray(depth)
    if d.ndim != 2:
        raise SceneLocError(f"{source}: depth must be an (H, W) array, got shape {d.shape}")
    if depth_scale_m is not None:
        check_budget("--depth-scale", depth_scale_m)
    if d.dtype == np.uint16:
        scale = 0.001 if depth_scale_m is None else depth_scale_m
        out = d.astype(np.float32) * np.float32(scale)
        out[(d == 0) | (d == 65535)] = 0.0
    elif np.issubdtype(d.dtype, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):   # overflow becomes inf, dropped below
            out = d.astype(np.float32) * np.float32(1.0 if depth_scale_m is None else depth_scale_m)
        out[~np.isfinite(out) | (out < 0)] = 0.0
    else:
        raise SceneLocError(f"{source}: depth must be uint16 millimetres or float metres, got {d.dtype}")
    valid = out > 0
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise SceneLocError(f"{source}: depth map holds no valid depth (all zero)")
    # per query frame: the median (milliseconds on a VGA map) only where it can exceed MAX_DEPTH_M,
    # i.e. where at least half the valid depths do (a count, ~50x cheaper)
    if 2 * int(np.count_nonzero(out > MAX_DEPTH_M)) >= n_valid:
        median = float(np.median(out[valid]))
        if median > MAX_DEPTH_M:
            raise SceneLocError(f"{source}: median depth {median:g} m is not plausible: millimetres given as metres? "
                                f"(pass uint16 millimetres, metres as float, or set the depth scale)")
    return out


# ------------------------------------------------------------------------------------ quaternions


def check_quaternion(q: np.ndarray, where: str) -> np.ndarray:
    """Unit quaternion ``(4,)`` from ``q``: refused when its norm is further than
    ``QUATERNION_NORM_TOLERANCE`` from 1 (a corrupt or mis-ordered line, not rounding)."""
    with np.errstate(over="ignore"):   # 1e300 entries: an infinite norm, refused below
        norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise SceneLocError(f"{where}: zero quaternion")
    if not abs(norm - 1.0) <= QUATERNION_NORM_TOLERANCE:
        raise SceneLocError(f"{where}: quaternion norm {norm:.3f} is not 1 (corrupt pose line?)")
    return np.asarray(q, dtype=np.float64) / norm


# ---------------------------------------------------------------------------------- output paths


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_path(path: str | Path, kind: str = "file", inputs: Iterable[str | Path | None] = (),
                      option: str = "", force: bool | None = None) -> Path:
    """Refuse an output ``path`` that cannot be written, before any work: a file where a folder is
    expected or the reverse (``kind`` "file" or "dir"), a parent that is a file, a missing parent
    (for a file), or a path inside (or holding) one of the ``inputs`` folders/files. With ``force``
    given (False: no ``--force``), an existing file is refused too: nothing a user wrote is overwritten."""
    out = Path(path)
    label = f"{option} {out}" if option else str(out)
    if kind == "file" and out.is_dir():
        raise SceneLocError(f"{label}: is a directory (give a file name)")
    if kind == "file" and force is False and out.exists():
        raise SceneLocError(f"{out}: exists (use --force to overwrite)")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise SceneLocError(f"{label}: exists and is not a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SceneLocError(f"{label}: {parent} is a file, not a directory")
            break
    if kind == "file" and not out.parent.exists():
        raise SceneLocError(f"{label}: directory {out.parent} does not exist")
    resolved = out.resolve()
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if _inside(resolved, src) or _inside(src, resolved):
            raise SceneLocError(f"{label}: output would overwrite or sit inside the input {given}")
    return out
