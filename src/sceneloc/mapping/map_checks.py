"""The checks that make a broken map directory one line naming the file, what is wrong with it and how
to rebuild the map, instead of a traceback from deep inside torch or numpy (``Map.load``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sceneloc.data.dataset import POSE_CAMERAS
from sceneloc.errors import SceneLocError
from sceneloc.nets.models import ARCHITECTURES
from sceneloc.validation import check_intrinsics

#: config.json keys every map has, and the type each must be (checked before any network is built).
CONFIG_KEYS = {"format_version": int, "network": dict, "input_height": int, "image_size": list,
               "intrinsics": list, "normalisation": dict}

def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, at most ``limit`` characters (PyTorch's run long)."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def check_map_config(config: object, cfg_path: Path, rebuild: str) -> None:
    """``config.json`` holds an object with every key of ``CONFIG_KEYS`` of the right type, a known
    architecture and a positive normalisation scale; else one line naming the key."""
    if not isinstance(config, dict):
        raise SceneLocError(f"{cfg_path}: map configuration must be a JSON object, not {type(config).__name__}; "
                            f"{rebuild}")
    for key, kind in CONFIG_KEYS.items():
        if key not in config:
            raise SceneLocError(f"{cfg_path}: map configuration lacks {key!r}; {rebuild}")
        if not isinstance(config[key], kind) or isinstance(config[key], bool):
            raise SceneLocError(f"{cfg_path}: {key!r} must be a {kind.__name__}, not {type(config[key]).__name__}; "
                                f"{rebuild}")
    if config["network"].get("arch") not in ARCHITECTURES:
        raise SceneLocError(f"{cfg_path}: unknown network arch {config['network'].get('arch')!r} (this sceneloc "
                            f"reads {', '.join(ARCHITECTURES)}); {rebuild}")
    norm = config["normalisation"]
    try:
        center = np.asarray(norm["center"], dtype=np.float64)
        scale = float(norm["scale"])
        K = np.asarray(config["intrinsics"], dtype=np.float64)
        hw = [int(v) for v in config["image_size"]]
    except (KeyError, TypeError, ValueError) as e:
        raise SceneLocError(f"{cfg_path}: malformed normalisation, intrinsics or image_size ({first_line(e)}); "
                            f"{rebuild}") from None
    if center.shape != (3,) or not np.all(np.isfinite(center)) or not (math.isfinite(scale) and scale > 0):
        raise SceneLocError(f"{cfg_path}: 'normalisation' needs a finite 3-vector center and a scale > 0; {rebuild}")
    if len(hw) != 2 or min(hw) < 1 or config["input_height"] < 1:
        raise SceneLocError(f"{cfg_path}: 'image_size' must be [H, W] and 'input_height' positive; {rebuild}")
    try:
        check_intrinsics(K, tuple(hw), f"{cfg_path}: 'intrinsics'")
    except SceneLocError as e:
        raise SceneLocError(f"{e}; {rebuild}") from None
    depth_scale = config.get("depth_to_pose_scale", 1.0)   # maps before it was an option: 1
    if isinstance(depth_scale, bool) or not isinstance(depth_scale, (int, float)) or not (
            math.isfinite(depth_scale) and depth_scale > 0):
        raise SceneLocError(f"{cfg_path}: 'depth_to_pose_scale' must be a number > 0, not {depth_scale!r}; {rebuild}")
    pose_camera = config.get("pose_camera", "depth")   # maps before it was an option: the depth camera's
    if pose_camera not in POSE_CAMERAS:
        raise SceneLocError(f"{cfg_path}: 'pose_camera' must be {' or '.join(map(repr, POSE_CAMERAS))}, not "
                            f"{pose_camera!r}; {rebuild}")


def load_map_file(path: Path, rebuild: str, loader):
    """``loader()``, with any failure reading the map file ``path`` (truncated, not the format) as one
    line naming it and how to rebuild the map."""
    try:
        return loader()
    except SceneLocError as e:
        raise SceneLocError(f"{first_line(e, 300)}; {rebuild}") from None
    except Exception as e:  # a corrupt file raises whatever its reader raises (zip, pickle, EOF)
        raise SceneLocError(f"{path}: unreadable map file ({type(e).__name__}: {first_line(e)}); {rebuild}") from None
