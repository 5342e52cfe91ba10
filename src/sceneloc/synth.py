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

* ``room`` (default): 3.2 x 3.0 x 2.5 m living room with posters, table, cabinet, bookshelf, sofa;
  the camera moves in about 2.1 x 1.9 x 0.7 m. Moderate; what ``make demo`` maps.
* ``desk``: 2.2 x 1.8 x 2.4 m study, a desk corner seen from a chair; about 1 x 0.6 x 0.5 m of
  camera motion (like 7-Scenes' Heads). Small and easy.
* ``kitchen``: 4.4 x 3.4 x 2.6 m, six identical cabinet doors, low-texture walls and fridge,
  depth up to ~4.5 m; about 3.2 x 2.0 x 0.7 m of camera motion. Large and harder.
* ``stairs``: 12 identical steps between brick walls in a 1.6 m wide stairwell, the camera
  climbing with them (like 7-Scenes' Stairs). Repetitive and hard.

Everything is deterministic from ``seed``: the scene itself depends only on the preset; each
sequence draws its trajectory and noise from its own random stream, test sequences from a stream
separate from the training ones.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .errors import SceneLocError

#: Kinect intrinsics of 7-Scenes at 640x480, the default camera.
DEFAULT_SIZE = (640, 480)
DEFAULT_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
NEAR = 0.01                      # near clipping plane (m): only guards the divisions
TEXTURE_MAX_SIDE = 384           # texels; larger textures only alias more at room distances
#: Huffman-only PNG: lossless and deterministic, twice as fast as the default for noisy images
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]


# =============================================================================== scene description


@dataclass
class Quad:
    """A textured rectangle ``origin + a * e1 + b * e2`` for ``a, b`` in ``[0, 1]``.

    Seen from its visible side, ``origin`` is the top-left corner, ``e1`` points right and ``e2``
    down, so the visible side's normal is ``e2 x e1``. ``repeat`` is the size in metres of one
    texture tile along ``(e1, e2)`` (the texture repeats), or None to stretch the texture once
    over the quad (posters). ``tint`` multiplies the texture's BGR colour (0..1 each).
    ``interest`` weighs the quad (per square metre) as something a camera operator looks at.
    """
    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    texture: str
    repeat: tuple[float, float] | None = None
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interest: float = 1.0

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.e2, self.e1)
        return n / np.linalg.norm(n)


@dataclass
class Scene:
    """A preset: quads plus what trajectories need to know about free space.

    ``camera_region`` ``(lo, hi)`` bounds the camera centres; ``obstacles`` are boxes ``(lo, hi)``
    the camera keeps ``clearance`` metres away from; ``view_range`` ``(near, far)`` bounds the
    distance to the surface point a camera looks at.
    """
    name: str
    description: str
    size: tuple[float, float, float]                     # room extent (x, y, z) in metres
    quads: list[Quad]
    camera_region: tuple[np.ndarray, np.ndarray]
    obstacles: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    clearance: float = 0.4
    view_range: tuple[float, float] = (0.8, 2.8)
    light: tuple[float, float, float] = (1.5, 1.5, 2.4)  # ceiling lamp position
    waypoints: int = 7                                   # random waypoints per sequence
    sweep: bool = False                                  # sequences turn round the room (see _waypoints)


def _v(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def rect(center, normal, width: float, height: float, texture: str, up=(0.0, 0.0, 1.0),
         repeat: tuple[float, float] | None = None, tint=(1.0, 1.0, 1.0)) -> Quad:
    """A ``width`` x ``height`` rectangle centred at ``center``, visible from the side ``normal``
    points to, with ``up`` (orthogonal to ``normal``) pointing to the top edge of its texture."""
    c, n, up = _v(*center), _v(*normal), _v(*up)
    right = np.cross(-n, up)                  # a viewer facing the quad looks along -n
    return Quad(c - right * width / 2 + up * height / 2, right * width, -up * height, texture, repeat, tint)


_FACES = {  # outward normal -> "up" of the texture on that face
    (1, 0, 0): (0, 0, 1), (-1, 0, 0): (0, 0, 1), (0, 1, 0): (0, 0, 1), (0, -1, 0): (0, 0, 1),
    (0, 0, 1): (0, 1, 0), (0, 0, -1): (0, 1, 0),
}


def box(lo, hi, texture: str | dict, repeat=None, tint=(1.0, 1.0, 1.0), inward: bool = False,
        skip: tuple = ((0, 0, -1),)) -> list[Quad]:
    """The faces of an axis-aligned box, visible from outside (furniture) or inside (``inward``:
    a room). ``texture`` is one name or a dict from outward normal tuple to ``(texture, repeat,
    tint)``; faces whose outward normal is in ``skip`` are left out (by default the bottom)."""
    lo, hi = _v(*lo), _v(*hi)
    quads = []
    for n, up in _FACES.items():
        if n in skip:
            continue
        nv = _v(*n)
        axis = int(np.argmax(np.abs(nv)))
        center = (lo + hi) / 2
        center[axis] = hi[axis] if nv[axis] > 0 else lo[axis]
        size = hi - lo
        upv = _v(*up)
        right = np.cross(-nv, upv)
        w, h = abs(size @ right), abs(size @ upv)
        tex, rep, tn = (texture.get(n, texture.get("default")) if isinstance(texture, dict)
                        else (texture, repeat, tint))
        if inward:
            quads.append(rect(center, -nv, w, h, tex, up if n[2] == 0 else (0, -1, 0), rep, tn))
        else:
            quads.append(rect(center, nv, w, h, tex, up, rep, tn))
    return quads


def table(x: float, y: float, w: float, d: float, h: float, top: str, tint=(1, 1, 1)) -> list[Quad]:
    """A table with its top centred at (x, y): a 4 cm slab on four 5 cm legs."""
    quads = box((x - w / 2, y - d / 2, h - 0.04), (x + w / 2, y + d / 2, h), top, (0.6, 0.6), tint, skip=())
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = x + sx * (w / 2 - 0.06), y + sy * (d / 2 - 0.06)
            quads += box((cx - 0.025, cy - 0.025, 0), (cx + 0.025, cy + 0.025, h - 0.04), "wood",
                         (0.4, 0.4), (0.5, 0.5, 0.5), skip=((0, 0, -1), (0, 0, 1)))
    return quads


def _poster(wall_normal, center, w: float, h: float, texture: str) -> Quad:
    """A picture hanging 1 cm in front of a wall (no z-fighting: the z-buffer sees a 1 cm step)."""
    c = _v(*center) + 0.01 * _v(*wall_normal)
    q = rect(c, wall_normal, w, h, texture)
    q.interest = 2.0
    return q


def _room_shell(sx: float, sy: float, sz: float, walls: dict, floor, ceiling) -> list[Quad]:
    """Floor, ceiling and four walls of a box room ``[0, sx] x [0, sy] x [0, sz]``, seen from inside.
    ``walls`` maps the wall's inward normal to ``(texture, repeat, tint)``."""
    faces = {(-n[0], -n[1], 0): spec for n, spec in walls.items()}
    faces[(0, 0, -1)] = floor
    faces[(0, 0, 1)] = ceiling
    quads = box((0, 0, 0), (sx, sy, sz), faces, inward=True, skip=())
    for q in quads:
        q.interest = 0.3   # people film the things in a room more than its bare walls and floor
    return quads


# ---------------------------------------------------------------------------------------- presets

WHITE, CREAM, GREY = (0.92, 0.93, 0.95), (0.78, 0.88, 0.93), (0.75, 0.75, 0.75)


def _preset_room() -> Scene:
    """3.2 x 3.0 x 2.5 m living room: posters, table, cabinet, bookshelf, sofa, rug."""
    sx, sy, sz = 3.2, 3.0, 2.5
    q = _room_shell(sx, sy, sz, {
        (0, 1, 0): ("brick", (1.0, 0.5), (0.75, 0.8, 0.95)),      # wall y=0, bricks (repetitive)
        (1, 0, 0): ("plain", (1.0, 1.0), CREAM),                   # wall x=0, low texture
        (0, -1, 0): ("stripes", (0.6, 2.5), (0.95, 0.9, 0.85)),    # wall y=sy, wallpaper
        (-1, 0, 0): ("plain", (1.0, 1.0), (0.85, 0.9, 0.8)),       # wall x=sx
    }, floor=("wood", (1.2, 1.2), (0.9, 0.9, 0.9)), ceiling=("plain", (1.0, 1.0), WHITE))
    q += [
        _poster((1, 0, 0), (0, 0.9, 1.5), 0.9, 0.9, "astronaut"),
        _poster((1, 0, 0), (0, 2.1, 1.4), 0.9, 0.6, "rocket"),
        _poster((0, -1, 0), (1.0, sy, 1.55), 0.9, 0.6, "coffee"),
        _poster((0, -1, 0), (2.3, sy, 1.5), 0.7, 0.7, "hubble"),
        _poster((-1, 0, 0), (sx, 1.9, 1.5), 0.9, 0.6, "chelsea"),
        _poster((0, 1, 0), (2.4, 0, 1.6), 0.6, 0.45, "retina"),
        rect((sx - 0.005, 0.7, 1.0), (-1, 0, 0), 0.85, 2.0, "panel", repeat=None, tint=(0.55, 0.7, 0.8)),  # door
        rect((1.5, 1.55, 0.004), (0, 0, 1), 1.6, 1.1, "ihc", up=(0, 1, 0)),                             # rug
    ]
    q += table(1.6, 1.6, 1.2, 0.8, 0.75, "wood", (0.7, 0.85, 1.0))
    q += box((1.25, 1.4, 0.75), (1.55, 1.62, 0.8), {(0, 0, 1): ("page", None, (1, 1, 1)),
                                                     "default": ("plain", (0.3, 0.3), (0.2, 0.3, 0.7))})  # book
    q += box((1.8, 1.75, 0.75), (2.0, 1.95, 0.95), "coins", (0.2, 0.2), (0.6, 0.8, 0.9))                  # box
    cabinet = ((0.05, 2.45, 0.0), (0.85, 2.95, 0.9))
    q += box(*cabinet, {(1, 0, 0): ("panel", (0.5, 0.9), (0.5, 0.75, 0.9)),
                        "default": ("wood", (0.8, 0.8), (0.6, 0.7, 0.8))})
    q += box((0.6, 2.55, 0.9), (0.8, 2.75, 1.2), "camera", (0.3, 0.3), (0.8, 0.7, 0.6))                  # on cabinet
    shelf = ((2.2, 2.65, 0.0), (3.15, 2.98, 1.9))
    q += box(*shelf, {(0, -1, 0): ("books", (0.95, 0.95), (1, 1, 1)),
                      "default": ("wood", (0.8, 0.8), (0.5, 0.6, 0.7))})
    sofa = ((0.9, 0.05, 0.0), (2.5, 0.85, 0.45))
    q += box(*sofa, "carpet", (0.5, 0.5), (0.55, 0.45, 0.75))
    q += box((0.9, 0.05, 0.45), (2.5, 0.25, 0.85), "carpet", (0.5, 0.5), (0.55, 0.45, 0.75))              # backrest
    obstacles = [(_v(0.9, 1.2, 0), _v(2.3, 2.0, 0.75)), (_v(*cabinet[0]), _v(*cabinet[1]) + _v(0, 0, 0.3)),
                 (_v(*shelf[0]), _v(*shelf[1])), (_v(*sofa[0]), _v(2.5, 0.85, 0.85))]
    return Scene("room", "3.2 x 3.0 x 2.5 m living room, posters and furniture (default, moderate)",
                 (sx, sy, sz), q, (_v(0.55, 0.55, 1.1), _v(sx - 0.55, sy - 0.55, 1.8)), obstacles,
                 light=(1.6, 1.5, 2.45), waypoints=9, sweep=True)


def _preset_desk() -> Scene:
    """Small and easy: a desk corner seen from a chair, ~1 m^3 of camera motion (like 7-Scenes' Heads)."""
    sx, sy, sz = 2.2, 1.8, 2.4
    q = _room_shell(sx, sy, sz, {
        (0, 1, 0): ("stripes", (0.6, 2.5), (0.9, 0.95, 0.9)),
        (1, 0, 0): ("plain", (1.0, 1.0), CREAM),
        (0, -1, 0): ("plain", (1.0, 1.0), (0.85, 0.85, 0.95)),
        (-1, 0, 0): ("brick", (1.0, 0.5), (0.7, 0.75, 0.9)),
    }, floor=("tiles", (0.6, 0.6), GREY), ceiling=("plain", (1.0, 1.0), WHITE))
    q += [
        _poster((0, -1, 0), (0.7, sy, 1.45), 0.7, 0.7, "astronaut"),
        _poster((0, -1, 0), (1.6, sy, 1.3), 0.6, 0.4, "coffee"),
        _poster((1, 0, 0), (0, 1.0, 1.5), 0.5, 0.5, "colorwheel"),
    ]
    q += table(1.1, 1.45, 1.4, 0.6, 0.74, "wood", (0.75, 0.8, 0.9))
    q += box((0.7, 1.6, 0.74), (1.3, 1.66, 1.12), {(0, -1, 0): ("rocket", None, (1, 1, 1)),
                                                    "default": ("plain", (0.3, 0.3), (0.15, 0.15, 0.15))})  # monitor
    q += box((0.5, 1.3, 0.74), (0.72, 1.6, 0.78), {(0, 0, 1): ("text", None, (1, 1, 1)),
                                                   "default": ("plain", (0.3, 0.3), (0.6, 0.3, 0.2))})     # book
    q += box((1.45, 1.3, 0.74), (1.55, 1.4, 0.86), "clock", (0.2, 0.2), (0.4, 0.6, 0.9))                 # mug
    q += box((1.6, 1.25, 0.74), (1.75, 1.55, 0.9), "chelsea", None)                                       # photo box
    obstacles = [(_v(0.4, 1.15, 0), _v(1.8, 1.75, 1.12))]
    return Scene("desk", "2.2 x 1.8 x 2.4 m study, a desk corner seen from a chair (small, easy)",
                 (sx, sy, sz), q, (_v(0.6, 0.35, 1.05), _v(1.6, 0.95, 1.55)), obstacles,
                 clearance=0.3, view_range=(0.6, 1.6), light=(1.1, 0.9, 2.35), waypoints=6)


def _preset_kitchen() -> Scene:
    """Large and harder: identical cabinet doors (repetition), low-texture walls, more depth range."""
    sx, sy, sz = 4.4, 3.4, 2.6
    q = _room_shell(sx, sy, sz, {
        (0, 1, 0): ("tiles", (0.3, 0.3), (0.9, 0.95, 0.95)),
        (1, 0, 0): ("plain", (1.0, 1.0), (0.8, 0.85, 0.9)),
        (0, -1, 0): ("plain", (1.0, 1.0), CREAM),
        (-1, 0, 0): ("stripes", (0.6, 2.5), (0.85, 0.9, 0.95)),
    }, floor=("tiles", (0.8, 0.8), (0.7, 0.75, 0.8)), ceiling=("plain", (1.0, 1.0), WHITE))
    # a counter with six identical doors along the y=0 wall and wall cabinets above it
    q += box((0.3, 0.02, 0), (3.9, 0.62, 0.88), {(0, 1, 0): ("panel", (0.6, 0.88), (0.6, 0.8, 0.9)),
                                                 (0, 0, 1): ("gravel", (0.5, 0.5), (0.8, 0.8, 0.8)),
                                                 "default": ("plain", (0.5, 0.5), (0.6, 0.8, 0.9))})
    q += box((0.3, 0.02, 1.45), (3.9, 0.37, 2.15), {(0, 1, 0): ("panel", (0.6, 0.7), (0.85, 0.9, 0.9)),
                                                    "default": ("plain", (0.5, 0.5), (0.85, 0.9, 0.9))},
                 skip=())
    q += [
        _poster((1, 0, 0), (0, 1.7, 1.5), 1.0, 0.7, "coffee"),
        _poster((0, -1, 0), (1.2, sy, 1.5), 0.8, 0.8, "chelsea"),
        _poster((0, -1, 0), (3.3, sy, 1.4), 0.9, 0.6, "rocket"),
        _poster((-1, 0, 0), (sx, 2.3, 1.5), 0.7, 0.7, "immunohistochemistry"),
        rect((1.5, 0.01, 1.17), (0, 1, 0), 1.2, 0.5, "moon"),      # window-like picture between cabinets
        rect((sx - 0.005, 0.9, 1.0), (-1, 0, 0), 0.85, 2.0, "panel", tint=(0.5, 0.6, 0.7)),
    ]
    q += table(2.2, 2.1, 1.5, 0.9, 0.76, "wood", (0.8, 0.85, 0.95))
    q += box((1.8, 1.9, 0.76), (2.1, 2.15, 0.84), "coins", (0.2, 0.2), (0.9, 0.8, 0.6))
    q += box((2.5, 2.2, 0.76), (2.62, 2.32, 0.9), "camera", (0.15, 0.15), (0.5, 0.8, 0.9))
    fridge = ((sx - 0.75, 0.05, 0), (sx - 0.05, 0.75, 1.85))
    q += box(*fridge, "plain", (0.5, 0.5), (0.9, 0.9, 0.9))
    shelf = ((0.02, 2.5, 0), (0.4, 3.38, 1.8))
    q += box(*shelf, {(1, 0, 0): ("books", (0.88, 0.9), (1, 1, 1)), "default": ("wood", (0.8, 0.8), (0.5, 0.6, 0.7))})
    obstacles = [(_v(0.3, 0.02, 0), _v(3.9, 0.62, 0.88)), (_v(0.3, 0.02, 1.45), _v(3.9, 0.37, 2.15)),
                 (_v(1.45, 1.65, 0), _v(2.95, 2.55, 0.9)), (_v(*fridge[0]), _v(*fridge[1])),
                 (_v(*shelf[0]), _v(*shelf[1]))]
    return Scene("kitchen", "4.4 x 3.4 x 2.6 m kitchen, identical cabinet doors, low-texture walls (large, harder)",
                 (sx, sy, sz), q, (_v(0.6, 0.8, 1.1), _v(sx - 0.6, sy - 0.6, 1.8)), obstacles,
                 view_range=(0.9, 3.2), light=(2.2, 1.7, 2.55), waypoints=9, sweep=True)


def _preset_stairs() -> Scene:
    """A narrow staircase of 12 identical steps between brick walls (repetitive, like 7-Scenes' Stairs)."""
    n_steps, run, rise = 12, 0.25, 0.18
    x0, width = 0.9, 1.6
    top = n_steps * rise
    sx, sy, sz = x0 + n_steps * run + 1.0, width, top + 2.5
    q = _room_shell(sx, sy, sz, {
        (0, 1, 0): ("brick", (1.0, 0.5), (0.7, 0.75, 0.9)),
        (1, 0, 0): ("plain", (1.0, 1.0), CREAM),
        (0, -1, 0): ("brick", (1.0, 0.5), (0.75, 0.8, 0.95)),
        (-1, 0, 0): ("plain", (1.0, 1.0), (0.85, 0.85, 0.8)),
    }, floor=("carpet", (0.5, 0.5), GREY), ceiling=("plain", (1.0, 1.0), WHITE))
    obstacles = []
    for i in range(n_steps):  # every step the same: same textures, same tiling phase
        lo, hi = _v(x0 + i * run, 0, 0), _v(x0 + (i + 1) * run, width, (i + 1) * rise)
        if i == n_steps - 1:
            hi[0] = sx  # the top landing
        q += box(lo, hi, {(0, 0, 1): ("wood", (0.5, 0.25), (0.7, 0.8, 0.9)),
                          (-1, 0, 0): ("plain", (0.5, 0.5), (0.85, 0.85, 0.85)),
                          "default": ("plain", (0.5, 0.5), (0.7, 0.7, 0.7))},
                 skip=((0, 0, -1), (1, 0, 0), (0, 1, 0), (0, -1, 0)))
        obstacles.append((lo, hi))
    q += [  # a few pictures so that the repetition is not hopeless
        _poster((0, 1, 0), (0.5, 0, 1.4), 0.6, 0.6, "astronaut"),
        _poster((0, -1, 0), (2.2, sy, 2.3), 0.6, 0.4, "coffee"),
        _poster((-1, 0, 0), (sx, 0.8, top + 1.4), 0.8, 0.8, "hubble"),
        _poster((0, 1, 0), (3.6, 0, top + 1.2), 0.5, 0.5, "chelsea"),
    ]
    return Scene("stairs", "staircase of 12 identical steps between brick walls, 1.6 m wide (repetitive, hard)",
                 (sx, sy, sz), q, (_v(0.4, 0.45, 1.0), _v(sx - 0.45, sy - 0.45, top + 1.6)), obstacles,
                 clearance=0.6, view_range=(0.7, 2.6), light=(sx / 2, sy / 2, sz - 0.1), waypoints=6)


PRESETS: dict[str, Callable[[], Scene]] = {
    "room": _preset_room, "desk": _preset_desk, "kitchen": _preset_kitchen, "stairs": _preset_stairs,
}
DEFAULT_PRESET = "room"


def make_scene(preset: str) -> Scene:
    """The named preset's scene (deterministic: it depends on the name only)."""
    if preset not in PRESETS:
        raise SceneLocError(f"--preset {preset!r}: unknown preset (choose from {', '.join(PRESETS)})")
    return PRESETS[preset]()


# ========================================================================================= textures

#: scikit-image sample images that ship inside the package (no download).
PHOTOS = {"astronaut": "astronaut", "coffee": "coffee", "chelsea": "chelsea", "rocket": "rocket",
          "hubble": "hubble_deep_field", "immunohistochemistry": "immunohistochemistry",
          "ihc": "immunohistochemistry", "retina": "retina", "colorwheel": "colorwheel",
          "brick": "brick", "grass": "grass", "gravel": "gravel", "camera": "camera", "coins": "coins",
          "moon": "moon", "page": "page", "text": "text", "clock": "clock"}


def _fit(img: np.ndarray, max_side: int = TEXTURE_MAX_SIDE) -> np.ndarray:
    s = max_side / max(img.shape[:2])
    if s < 1:
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return img


def _photo(name: str) -> np.ndarray:
    """A scikit-image sample as BGR uint8 (grey images replicated, alpha composited on white)."""
    import skimage.data
    img = np.asarray(getattr(skimage.data, PHOTOS[name])())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255
        img = (img[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return _fit(np.ascontiguousarray(img[:, :, ::-1]))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], tileable: a random grid upsampled with wrap-around."""
    g = rng.random((cells, cells)).astype(np.float32)
    g = np.tile(g, (3, 3))
    big = cv2.resize(g, (shape[1] * 3, shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[shape[0]:2 * shape[0], shape[1]:2 * shape[1]], 0, 1)


def _procedural(name: str) -> np.ndarray:
    """Pattern textures (BGR uint8, tileable), each from its own fixed random stream."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    n = 256
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if name == "plain":      # low texture: faint blotches only
        g = 200 + 10 * _smooth_noise(rng, (n, n), 4) + rng.normal(0, 1.5, (n, n))
        return np.clip(np.repeat(g[:, :, None], 3, 2), 0, 255).astype(np.uint8)
    if name == "wood":       # planks with grain
        img = np.zeros((n, n, 3), np.float32)
        for i in range(4):
            sl = slice(i * n // 4, (i + 1) * n // 4)
            base = np.array([60, 110, 160], np.float32) * rng.uniform(0.75, 1.15)
            grain = 0.85 + 0.15 * np.sin(xx[sl] * rng.uniform(0.08, 0.2) + 3 * _smooth_noise(rng, (n // 4, n), 6))
            img[sl] = base * grain[:, :, None]
            img[i * n // 4] = 30
        return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    if name == "tiles":      # 2x2 tiles with grout: strongly repetitive
        img = np.full((n, n, 3), 215, np.float32)
        img[((xx % 128) < 4) | ((yy % 128) < 4)] = 110
        img[(xx >= 128) ^ (yy >= 128)] *= 0.92
        return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    if name == "carpet":
        g = 120 + 60 * _smooth_noise(rng, (n, n), 16) + rng.normal(0, 12, (n, n))
        return np.clip(np.repeat(g[:, :, None], 3, 2), 0, 255).astype(np.uint8)
    if name == "stripes":    # wallpaper
        s = 0.5 + 0.5 * (np.sin(xx * 2 * np.pi / 64) > 0) * 0.3 + 0.2 * (np.sin(xx * 2 * np.pi / 16) > 0.6)
        g = 170 + 60 * s + rng.normal(0, 3, (n, n))
        img = np.stack([g * 0.85, g * 0.95, g], axis=2)
        return np.clip(img, 0, 255).astype(np.uint8)
    if name == "panel":      # a cabinet door: frame, inset, handle
        img = np.full((n, n, 3), 200, np.float32)
        inner = (xx > 20) & (xx < n - 20) & (yy > 20) & (yy < n - 20)
        img[inner] = 180
        img[((xx > 16) & (xx < 22) | (xx > n - 22) & (xx < n - 16)) & (yy > 16) & (yy < n - 16)] = 120
        img[((yy > 16) & (yy < 22) | (yy > n - 22) & (yy < n - 16)) & (xx > 16) & (xx < n - 16)] = 235
        img[(xx > n - 50) & (xx < n - 38) & (yy > 100) & (yy < 156)] = 40
        img[:2] = img[-2:] = img[:, :2] = img[:, -2:] = 60
        return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    if name == "books":      # three shelves of coloured book spines
        img = np.full((n, n, 3), 50, np.float32)
        for s in range(3):
            y0, y1 = s * n // 3 + 8, (s + 1) * n // 3 - 2
            x = 4
            while x < n - 4:
                w = int(rng.integers(6, 18))
                h = int(rng.integers(int((y1 - y0) * 0.6), y1 - y0))
                img[y1 - h:y1, x:min(x + w, n - 4)] = rng.integers(30, 230, 3)
                img[y1 - h + 6:y1 - h + 9, x + 1:min(x + w, n - 4) - 1] = 230
                x += w + 1
        return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    raise KeyError(name)


def texture_image(name: str) -> np.ndarray:
    """BGR uint8 texture by name: a scikit-image photograph or a procedural pattern."""
    return _photo(name) if name in PHOTOS else _procedural(name)


@dataclass
class Atlas:
    """All textures of a scene packed into one image, so one ``cv2.remap`` textures a frame.
    Each tile has a one-texel wrap-around border: bilinear lookups of repeating textures are seamless.
    ``x0, y0, w, h`` (T,) are each tile's interior in atlas pixels."""
    image: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    w: np.ndarray
    h: np.ndarray
    index: dict


@lru_cache(maxsize=8)
def _base_texture(name: str) -> np.ndarray:
    return texture_image(name)


def build_atlas(keys: list[tuple[str, tuple[float, float, float]]], width: int = 2048) -> Atlas:
    """Pack tinted textures ``(name, tint)`` in rows (shelf packing, in the given order)."""
    tiles = []
    for name, tint in keys:
        t = _base_texture(name).astype(np.float32) * np.array(tint, np.float32)
        t = np.clip(cv2.GaussianBlur(t, (3, 3), 0.6), 0, 255).astype(np.uint8)   # tames aliasing a little
        tiles.append(cv2.copyMakeBorder(t, 1, 1, 1, 1, cv2.BORDER_WRAP))
    pos, x, y, row_h = [], 0, 0, 0
    for t in tiles:
        h, w = t.shape[:2]
        if x + w > width:
            x, y, row_h = 0, y + row_h, 0
        pos.append((x, y))
        x, row_h = x + w, max(row_h, h)
    image = np.zeros((y + row_h, width, 3), np.uint8)
    for (x, y), t in zip(pos, tiles):
        image[y:y + t.shape[0], x:x + t.shape[1]] = t
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    return Atlas(image, f32([p[0] + 1 for p in pos]), f32([p[1] + 1 for p in pos]),
                 f32([t.shape[1] - 2 for t in tiles]), f32([t.shape[0] - 2 for t in tiles]),
                 {k: i for i, k in enumerate(keys)})


# ========================================================================================= renderer


@dataclass
class Render:
    """Geometry of one frame: ``depth (H, W)`` float32 metres along z (0 = nothing hit), ``quad
    (H, W)`` int32 index of the visible quad (-1 = none), ``a, b (H, W)`` its quad coordinates."""
    depth: np.ndarray
    quad: np.ndarray
    a: np.ndarray
    b: np.ndarray


@dataclass
class Lighting:
    """Per-frame light: exposure gain, BGR colour cast, strength of the ceiling lamp."""
    gain: float = 1.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lamp: float = 0.9


class Renderer:
    """Ray caster for one scene and one camera ``K (3, 3)`` at ``width x height``."""

    AMBIENT = 0.35
    SUN = 0.3                                    # directional light (a window), gives faces different shades
    SUN_DIR = _v(0.45, 0.3, 0.84) / np.linalg.norm(_v(0.45, 0.3, 0.84))
    LAMP_RADIUS = 2.5                            # metres at which the lamp's falloff halves

    def __init__(self, scene: Scene, K: np.ndarray, width: int, height: int):
        self.scene, self.K, self.W, self.H = scene, np.asarray(K, np.float64), width, height
        qs = scene.quads
        self.O = np.array([q.origin for q in qs])            # (Q, 3)
        self.E1 = np.array([q.e1 for q in qs])
        self.E2 = np.array([q.e2 for q in qs])
        self.N = np.array([q.normal for q in qs])            # visible-side unit normals
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        self.xs = ((np.arange(width) - cx) / fx).astype(np.float32)    # ray x / z per column
        self.ys = ((np.arange(height) - cy) / fy).astype(np.float32)   # ray y / z per row
        # texture lookup tables per quad: tile position/size and repetitions of the tile along e1, e2
        keys = list(dict.fromkeys((q.texture, tuple(q.tint)) for q in qs))
        self.atlas = build_atlas(keys)
        t = np.array([self.atlas.index[(q.texture, tuple(q.tint))] for q in qs])
        reps = np.array([(1.0, 1.0) if q.repeat is None else
                         (np.linalg.norm(q.e1) / q.repeat[0], np.linalg.norm(q.e2) / q.repeat[1]) for q in qs])
        sun = self.AMBIENT + self.SUN * np.clip(self.N @ self.SUN_DIR, 0, None)
        # per-quad tables, gathered per pixel: tile repetitions along e1, e2 | tile window in the
        # atlas (remap samples texel i's centre at i, hence -0.5) | ambient + window light | normal.
        # Row 0 stands for "no quad" (zeros), row q + 1 for quad q.
        table = np.column_stack([reps, self.atlas.x0[t] - 0.5, self.atlas.y0[t] - 0.5,
                                 self.atlas.w[t], self.atlas.h[t], sun, self.N]).astype(np.float32)
        table = np.concatenate([np.zeros((1, table.shape[1]), np.float32), table])
        if len(table) <= 256:   # cv2.LUT gathers from 256-entry tables several times faster than np.take
            table = np.concatenate([table, np.zeros((256 - len(table), table.shape[1]), np.float32)])
        self.columns = [np.ascontiguousarray(c) for c in table.T]

    def per_pixel(self, quad: np.ndarray, first: int, stop: int) -> list[np.ndarray]:
        """Columns ``first:stop`` of the per-quad table at every pixel of ``quad (H, W)``, each ``(H, W)``."""
        if len(self.columns[0]) == 256:
            idx = (quad + 1).astype(np.uint8)
            return [cv2.LUT(idx, c) for c in self.columns[first:stop]]
        return [np.take(c, quad + 1) for c in self.columns[first:stop]]

    # ----------------------------------------------------------------------------- geometry

    def render(self, T_wc: np.ndarray) -> Render:
        """Depth and visible quad per pixel for the camera-to-world pose ``T_wc (4, 4)``."""
        H, W = self.H, self.W
        R, C = T_wc[:3, :3], T_wc[:3, 3]
        Oc, E1c, E2c = (self.O - C) @ R, self.E1 @ R, self.E2 @ R     # camera frame (R^T v as rows)
        corners = np.stack([Oc, Oc + E1c, Oc + E1c + E2c, Oc + E2c], axis=1)   # (Q, 4, 3)
        facing = np.einsum("qi,qi->q", self.N, C - self.O) > 1e-9     # back faces are never visible
        in_front = corners[:, :, 2] > NEAR
        zbuf = np.full((H, W), np.inf, np.float32)
        qbuf = np.full((H, W), -1, np.int32)
        abuf = np.zeros((H, W), np.float32)
        bbuf = np.zeros((H, W), np.float32)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        for q in np.flatnonzero(facing & in_front.any(1)):
            pts = corners[q] if in_front[q].all() else _clip_near(corners[q])
            u = fx * pts[:, 0] / pts[:, 2] + cx
            v = fy * pts[:, 1] / pts[:, 2] + cy
            u0, u1 = max(math.floor(u.min()), 0), min(math.ceil(u.max()) + 1, W)
            v0, v1 = max(math.floor(v.min()), 0), min(math.ceil(v.max()) + 1, H)
            if u0 >= u1 or v0 >= v1:
                continue
            self._cast(q, Oc[q], E1c[q], E2c[q], u0, u1, v0, v1, zbuf, qbuf, abuf, bbuf)
        zbuf[qbuf < 0] = 0.0
        return Render(zbuf, qbuf, abuf, bbuf)

    def _cast(self, q, o, e1, e2, u0, u1, v0, v1, zbuf, qbuf, abuf, bbuf) -> None:
        """Intersect the rays of the pixel window ``[v0:v1, u0:u1]`` with quad ``q`` (camera frame
        ``o, e1, e2``) and keep the hits nearer than the z-buffer.

        Every quantity is affine in the ray ``r = (x, y, 1)``, so it is an outer sum of a column
        and a row vector: ``z = n.o / n.r`` and ``a = z g1.r - g1.o`` with ``g1 = (e2 x n) / |n|^2``
        (the dual basis: ``g1.e1 = 1``, ``g1.e2 = 0``), likewise ``b`` with ``g2 = (n x e1) / |n|^2``.
        """
        n = np.cross(e1, e2)
        nn = n @ n
        g1, g2 = np.cross(e2, n) / nn, np.cross(n, e1) / nn
        # python floats keep the pixel arrays float32 (numpy scalars would promote them to float64)
        (n0, n1, n2), (a0, a1, a2), (b0, b1, b2) = n.tolist(), g1.tolist(), g2.tolist()
        no, ao, bo = float(n @ o), float(g1 @ o), float(g2 @ o)
        xs, ys = self.xs[u0:u1], self.ys[v0:v1, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            z = no / ((n0 * xs) + (n1 * ys + n2))
            a = z * ((a0 * xs) + (a1 * ys + a2)) - ao
            b = z * ((b0 * xs) + (b1 * ys + b2)) - bo
            zb = zbuf[v0:v1, u0:u1]
            hit = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1) & (z > NEAR) & (z < zb)
        np.copyto(zb, z, where=hit)
        np.copyto(qbuf[v0:v1, u0:u1], q, where=hit)
        np.copyto(abuf[v0:v1, u0:u1], a, where=hit)
        np.copyto(bbuf[v0:v1, u0:u1], b, where=hit)

    def world_rays(self, T_wc: np.ndarray) -> list[np.ndarray]:
        """World-frame ray directions ``r_w = R (x, y, 1)`` per pixel, three ``(H, W)`` arrays,
        so the surface point is ``C + z r_w``."""
        R = T_wc[:3, :3].tolist()
        return [(R[k][0] * self.xs) + (R[k][1] * self.ys[:, None] + R[k][2]) for k in range(3)]

    # ----------------------------------------------------------------------------- appearance

    def shade(self, r: Render, T_wc: np.ndarray, light: Lighting) -> np.ndarray:
        """Colour ``(H, W, 3)`` float32 BGR in 0..255 (not clipped): texture x Lambert lighting.

        Lighting is view independent (diffuse only), so a surface point looks the same from every
        frame of a sequence; it has an ambient term, a directional "window" term constant per quad
        and a ceiling lamp with a distance falloff, which shades walls gradually and gives shape cues.
        """
        rep_a, rep_b, x0, y0, tw, th, sun, nx, ny, nz = self.per_pixel(r.quad, 0, 10)
        # texture coordinates: fraction of a tile along each axis, then the tile's atlas window
        ta, tb = r.a * rep_a, r.b * rep_b
        map_x = x0 + (ta - np.floor(ta)) * tw
        map_y = y0 + (tb - np.floor(tb)) * th
        albedo = cv2.remap(self.atlas.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # lamp: vector from the surface point P = C + z r_w to the lamp L
        C = T_wc[:3, 3]
        lc = (np.asarray(self.scene.light) - C).tolist()
        rw = self.world_rays(T_wc)
        lx, ly, lz = (lc[k] - r.depth * rw[k] for k in range(3))
        d2 = lx * lx + ly * ly + lz * lz
        ndl = nx * lx + ny * ly + nz * lz
        np.maximum(ndl, 0, out=ndl)
        lamp = ndl / np.sqrt(d2) / (1 + d2 * (1 / self.LAMP_RADIUS ** 2))
        intensity = sun + float(light.lamp) * lamp           # 0 where no quad: sun = ndl = 0 there
        out = cv2.multiply(albedo, cv2.cvtColor(intensity, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_32F)
        return cv2.multiply(out, tuple(c * light.gain for c in light.color) + (0.0,))

    def view_cosine(self, r: Render, T_wc: np.ndarray) -> np.ndarray:
        """``|cos|`` of the angle between each pixel's ray and the surface normal ``(H, W)``
        (small at grazing incidence, where depth sensors lose the surface)."""
        nx, ny, nz = self.per_pixel(r.quad, 7, 10)
        rx, ry, rz = self.world_rays(T_wc)
        dot = nx * rx + ny * ry + nz * rz
        return np.abs(dot) / np.sqrt(rx * rx + ry * ry + rz * rz)


def _clip_near(pts: np.ndarray) -> np.ndarray:
    """Clip a convex polygon ``(N, 3)`` (camera frame) to ``z > NEAR`` (Sutherland-Hodgman)."""
    out = []
    for i in range(len(pts)):
        p, q = pts[i], pts[(i + 1) % len(pts)]
        if p[2] > NEAR:
            out.append(p)
        if (p[2] > NEAR) != (q[2] > NEAR):
            s = (NEAR * 1.0001 - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.array(out)


# ===================================================================================== sensor model


@dataclass(frozen=True)
class SensorOptions:
    """Which sensor imperfections to simulate. All off (:meth:`clean`) gives exact depth and poses."""
    depth_noise: bool = True        # Kinect-like axial noise, sigma growing with distance
    holes: bool = True              # missing depth: out of range, object edges, grazing angles, blobs
    image_noise: bool = True        # signal-dependent photon + read noise
    lighting_change: bool = True    # exposure / colour cast / lamp per sequence, slow auto-exposure drift
    blur: bool = True               # mild motion blur along the image motion

    @classmethod
    def clean(cls) -> "SensorOptions":
        return cls(False, False, False, False, False)


DEPTH_RANGE = (0.45, 4.5)           # metres: what a Kinect-like sensor returns


def _gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of ``shape``, seeded from ``rng``. OpenCV's generator is used
    because it is several times faster than numpy's for the ~1M values a frame needs."""
    out = np.empty(shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(1, 2 ** 31)))
    cv2.randn(out.reshape(-1), 0.0, 1.0)   # flat view: one channel, so mean/std apply to all values
    return out


def _blobs(rng: np.random.Generator, shape: tuple[int, int], cells: int = 10) -> np.ndarray:
    """Smooth random field ``shape`` in about [0, 1]: a coarse random grid, bicubically upsampled."""
    g = rng.random((cells * shape[0] // shape[1] + 2, cells + 2)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def depth_to_mm(depth: np.ndarray, T_wc: np.ndarray, r: Render, renderer: Renderer,
                opts: SensorOptions, rng: np.random.Generator) -> np.ndarray:
    """Stored depth ``(H, W)`` uint16 millimetres (0 = none) from rendered ``depth (H, W)`` metres."""
    z = depth.copy()
    valid = r.quad >= 0
    if opts.depth_noise:
        # Nguyen et al. 2012, Kinect axial noise: 1.2 mm + 1.9 mm (z - 0.4)^2
        sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
        z += sigma * _gaussian(rng, z.shape)
    if opts.holes:
        H, W = z.shape
        valid &= (depth > DEPTH_RANGE[0]) & (depth < DEPTH_RANGE[1])
        valid &= renderer.view_cosine(r, T_wc) > 0.12
        # object edges: neighbourhoods whose depth jumps (the projector/camera baseline shadows them)
        k = np.ones((3, 3), np.uint8)
        jump = cv2.dilate(depth, k) - cv2.erode(depth, k)
        valid &= jump < 0.03 + 0.02 * depth
        # blobs (dark or specular patches) and speckle
        valid &= _blobs(rng, (H, W)) < rng.uniform(0.9, 0.97)
        valid &= rng.random((H, W), dtype=np.float32) > 0.005
    mm = np.rint(z * 1000.0)
    valid &= (mm > 0) & (mm < 65535)
    return np.where(valid, mm, 0).astype(np.uint16)


def motion_blur_kernel(flow: np.ndarray) -> np.ndarray | None:
    """Normalised line kernel along the image motion ``flow (2,)`` pixels, or None when < 0.5 px."""
    length = float(np.linalg.norm(flow))
    if length < 0.5:
        return None
    half = int(math.ceil(length / 2)) + 1
    k = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    for t in np.linspace(-0.5, 0.5, 4 * half + 1):
        x, y = half + t * flow[0], half + t * flow[1]
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0       # bilinear splat keeps sub-pixel lengths and angles
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    return k / k.sum()


def finish_image(color: np.ndarray, opts: SensorOptions, rng: np.random.Generator,
                 blur_flow: np.ndarray | None) -> np.ndarray:
    """Camera effects on the shaded ``color (H, W, 3)`` float32: optics, motion blur, noise -> uint8."""
    img = cv2.GaussianBlur(color, (3, 3), 0.5)        # lens softness, and hides the raster's jaggies
    if opts.blur and blur_flow is not None:
        k = motion_blur_kernel(blur_flow)
        if k is not None:
            img = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
    if opts.image_noise:
        # read noise 1.5 DN plus photon noise with variance 0.04 DN per DN of signal
        sigma = np.sqrt(np.maximum(img, 0) * np.float32(0.04) + np.float32(2.25))
        img += sigma * _gaussian(rng, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ===================================================================================== trajectories


def _box_distance(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance from points ``p (..., 3)`` to an axis-aligned box (0 inside)."""
    return np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0), axis=-1)


def free_space(scene: Scene, p: np.ndarray, slack: float = 0.0) -> np.ndarray:
    """Whether camera centres ``p (..., 3)`` lie in the camera region (``slack`` metres of tolerance)
    and at least ``clearance - slack`` from every obstacle."""
    lo, hi = scene.camera_region
    ok = np.all((p >= lo - slack) & (p <= hi + slack), axis=-1)
    for blo, bhi in scene.obstacles:
        ok &= _box_distance(p, blo, bhi) >= scene.clearance - slack
    return ok


def surface_samples(scene: Scene, rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Random points on the scene's surfaces worth looking at (weighted by area and interest, no
    ceiling): ``points (n, 3)`` and their ``normals (n, 3)``."""
    quads = [q for q in scene.quads if q.normal[2] > -0.5]
    weight = np.array([np.linalg.norm(np.cross(q.e1, q.e2)) * q.interest for q in quads])
    idx = rng.choice(len(quads), n, p=weight / weight.sum())
    ab = rng.random((n, 2))
    O = np.array([q.origin for q in quads])[idx]
    pts = O + ab[:, :1] * np.array([q.e1 for q in quads])[idx] + ab[:, 1:] * np.array([q.e2 for q in quads])[idx]
    return pts, np.array([q.normal for q in quads])[idx]


def _waypoints(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Camera waypoints ``(K, 3)`` in free space, 0.5-1.6 m apart, each with a look-at point
    ``(K, 3)`` on a surface facing it, within the scene's view range and not too steep.

    The view turns at most 60 degrees between waypoints (a hand-held camera pans smoothly); in a
    ``sweep`` scene it turns 15-75 degrees each time, always the same way round, so that a
    sequence scans the whole room as people do when they film one.
    """
    pts, normals = surface_samples(scene, rng)
    lo, hi = scene.camera_region
    sense = rng.choice([-1.0, 1.0])
    cams, targets = [], []
    while len(cams) < scene.waypoints:
        for _ in range(10000):
            c = lo + rng.random(3) * (hi - lo)
            if not free_space(scene, c):
                continue
            if cams and not 0.5 <= np.linalg.norm(c - cams[-1]) <= 1.6:
                continue
            d = pts - c
            dist = np.linalg.norm(d, axis=1)
            ok = (dist > scene.view_range[0]) & (dist < scene.view_range[1])
            ok &= -np.einsum("ij,ij->i", d, normals) > 0.35 * dist      # seen at most ~70 deg off-normal
            ok &= (d[:, 2] / dist > -0.7) & (d[:, 2] / dist < 0.25)      # at most 45 deg down, 15 deg up
            if targets:
                prev = targets[-1] - cams[-1]
                if scene.sweep:
                    turn = sense * (np.arctan2(d[:, 1], d[:, 0]) - math.atan2(prev[1], prev[0]))
                    turn = (turn + np.pi) % (2 * np.pi) - np.pi
                    ok &= (turn > math.radians(15)) & (turn < math.radians(75))
                else:
                    ok &= d @ prev > 0.5 * dist * np.linalg.norm(prev)
            if ok.any():
                cams.append(c)
                targets.append(pts[rng.choice(np.flatnonzero(ok))])
                break
        else:
            raise RuntimeError(f"preset {scene.name}: no camera waypoint found (scene description bug)")
    return np.array(cams), np.array(targets)


def _catmull_rom(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``points (K, D)`` at parameters ``t (M,)`` in ``[0, K-1]``."""
    P = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    i = np.clip(np.floor(t).astype(int), 0, len(points) - 2)
    s = (t - i)[:, None]
    p0, p1, p2, p3 = P[i], P[i + 1], P[i + 2], P[i + 3]
    return 0.5 * ((2 * p1) + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s ** 2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * s ** 3)


def _smooth_wobble(rng: np.random.Generator, s: np.ndarray, dims: int, amplitude: float) -> np.ndarray:
    """Hand tremor: a sum of three random sinusoids per dimension of arc length ``s (M,)``,
    1-5 cycles per metre, ``(M, dims)`` with about ``amplitude`` RMS."""
    freq = rng.uniform(1.0, 5.0, (3, dims)) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, (3, dims))
    return amplitude * np.sin(s[:, None, None] * freq + phase).sum(1) * math.sqrt(2 / 3)


def look_at(center: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation ``(3, 3)`` looking from ``center`` at ``target`` (z up), OpenCV axes,
    rolled by ``roll`` radians about the optical axis."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, _v(0, 0, 1))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=1)


def _rotvec(w: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def sample_trajectory(scene: Scene, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A hand-held-like walk: ``(n_frames, 4, 4)`` camera-to-world poses.

    Camera centres follow a Catmull-Rom spline through random waypoints; the
    viewing direction follows its own spline through the directions from each waypoint to a
    surface point (:func:`_waypoints`); frames are evenly spaced in walking plus turning; roll
    drifts a few degrees and a
    small tremor shakes position (1 cm) and orientation (0.5 deg). Trajectories that leave free
    space (the spline can swing out) are redrawn from the same stream.
    """
    for _ in range(200):
        cams, targets = _waypoints(scene, rng)
        dense_t = np.linspace(0, len(cams) - 1, 64 * len(cams))
        dense = _catmull_rom(cams, dense_t)
        if not free_space(scene, dense, slack=0.1).all():
            continue
        # spline the viewing directions, not the look-at points: an interpolated look-at point
        # can pass close to the camera and whip the view round
        dirs = targets - cams
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dense_views = _catmull_rom(dirs, dense_t)
        dense_views /= np.linalg.norm(dense_views, axis=1, keepdims=True)
        # frames evenly spaced in walking + turning (1 radian counts as half a metre): people slow
        # down while they pan, so neither the camera centre nor the view jumps between frames
        turned = np.arccos(np.clip(np.sum(dense_views[1:] * dense_views[:-1], axis=1), -1, 1))
        walked = np.linalg.norm(np.diff(dense, axis=0), axis=1)
        arc = np.concatenate([[0], np.cumsum(walked + 0.5 * turned)])
        s = np.linspace(0, arc[-1], n_frames)
        t = np.interp(s, arc, dense_t)
        centers = _catmull_rom(cams, t) + _smooth_wobble(rng, s, 3, 0.01)
        views = _catmull_rom(dirs, t)
        looks = centers + views / np.linalg.norm(views, axis=1, keepdims=True)
        roll = _smooth_wobble(rng, s / 4, 1, math.radians(3))[:, 0]
        shake = _smooth_wobble(rng, s, 3, math.radians(0.5))
        poses = np.zeros((n_frames, 4, 4))
        for i in range(n_frames):
            poses[i, :3, :3] = look_at(centers[i], looks[i], roll[i]) @ _rotvec(shake[i])
            poses[i, :3, 3] = centers[i]
            poses[i, 3, 3] = 1.0
        return poses
    raise RuntimeError(f"preset {scene.name}: no trajectory found in free space (scene description bug)")


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
    color = tuple(float(c) for c in rng.uniform(0.9, 1.1, 3))
    lamp = rng.uniform(0.4, 1.2)
    drift = 1 + _smooth_wobble(rng, np.linspace(0, 1, n), 1, 0.03)[:, 0]
    return [Lighting(float(gain * d), color, float(lamp)) for d in drift]


MAX_BLUR_PX = 3.0


def exposure_motion(renderer: Renderer, depth: np.ndarray, poses: list[np.ndarray], i: int,
                    travel: float) -> np.ndarray:
    """Image motion ``(2,)`` in pixels during frame ``i``'s exposure: the motion between its
    neighbours per metre walked, times ``travel``, the metres walked while the shutter is open
    (a hand-held camera at 0.3 m/s and 1/60 s moves 5 mm); at most ``MAX_BLUR_PX`` (mild blur)."""
    j0, j1 = max(i - 1, 0), min(i + 1, len(poses) - 1)
    if j0 == j1:
        return np.zeros(2)
    walked = np.linalg.norm(poses[j1][:3, 3] - poses[j0][:3, 3])
    flow = _image_flow(renderer, depth, poses[j0], poses[j1]) * travel / max(walked, 1e-3)
    length = np.linalg.norm(flow)
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
    if out.exists() and not out.is_dir():
        raise SceneLocError(f"{out}: OUT_DIR exists and is not a directory")
    if not out.exists():
        return
    entries = sorted(out.iterdir())
    if entries and not force:
        raise SceneLocError(f"{out}: OUT_DIR is not empty ({len(entries)} entries); pass --force to overwrite")
    for p in entries:
        if p.is_dir() and re.fullmatch(r"seq-\d+", p.name):
            shutil.rmtree(p)
        elif p.name in ("TrainSplit.txt", "TestSplit.txt", "camera-intrinsics.txt", "synth.json"):
            p.unlink()


def _default_intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """Kinect intrinsics for ``width x height``: the same horizontal field of view, square pixels,
    the principal point where it is at 640x480 (pixel centres map as in scale_intrinsics)."""
    sx, sy = width / DEFAULT_SIZE[0], height / DEFAULT_SIZE[1]
    fx, fy, cx, cy = DEFAULT_INTRINSICS
    return fx * sx, fy * sx, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def generate(out_dir: str | Path, preset: str = DEFAULT_PRESET, seed: int = 0, frames: int = 60,
             train_sequences: int = 3, test_sequences: int = 1, width: int = 640, height: int = 480,
             intrinsics: tuple[float, float, float, float] | None = None,
             sensor: SensorOptions = SensorOptions(), force: bool = False,
             preview: str | Path | None = None, progress: bool = True) -> Path:
    """Render a posed RGB-D dataset in 7-Scenes layout and return its root.

    Writes ``seq-XX/frame-XXXXXX.{color.png, depth.png, pose.txt}`` (colour ``(H, W, 3)`` uint8,
    depth ``(H, W)`` uint16 mm with 0 = none, pose 4x4 camera-to-world), ``TrainSplit.txt`` (the
    first ``train_sequences``), ``TestSplit.txt`` (the rest, if any), ``camera-intrinsics.txt`` (3x3) and
    ``synth.json`` (the options). The same arguments give byte-identical files.

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
    """
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
    if fx <= 0 or fy <= 0:
        raise SceneLocError(f"--intrinsics {fx},{fy},{cx},{cy}: focal lengths must be positive")
    if preview is not None and Path(preview).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise SceneLocError(f"--preview {preview}: the contact sheet must be a .png or .jpg file")
    out = Path(out_dir)
    _check_out_dir(out, force)
    out.mkdir(parents=True, exist_ok=True)

    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    renderer = Renderer(scene, K, width, height)
    n_seq = train_sequences + test_sequences
    sheet: list[list[np.ndarray]] = []    # preview tiles per sequence
    from .progress import progress as progress_bar
    with progress_bar(total=n_seq * frames, desc=f"synth {preset}", unit="frame", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for s in range(n_seq):
            is_test = s >= train_sequences
            # independent streams: (seed, split, index) -> trajectory, lighting, blur, per-frame noise
            ss = np.random.SeedSequence([seed, int(is_test), s])
            traj_ss, light_ss, blur_ss, noise_ss = ss.spawn(4)
            poses = [_as_written(T) for T in sample_trajectory(scene, frames, np.random.default_rng(traj_ss))]
            lights = _sequence_lighting(sensor, np.random.default_rng(light_ss), frames)
            travel = np.random.default_rng(blur_ss).uniform(0.003, 0.008)
            seq_dir = out / f"seq-{s + 1:02d}"
            seq_dir.mkdir(exist_ok=True)
            thumbs = []
            picks = set(np.linspace(0, frames - 1, min(PREVIEW_COLUMNS, frames)).round().astype(int).tolist())
            for i, (T, frame_ss) in enumerate(zip(poses, noise_ss.spawn(frames))):
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
    (out / "camera-intrinsics.txt").write_text(format_matrix(K))
    meta = {"generator": "sceneloc synth", "preset": preset, "description": scene.description,
            "seed": seed, "frames_per_sequence": frames,
            "train_sequences": [f"seq-{s + 1:02d}" for s in range(train_sequences)],
            "test_sequences": [f"seq-{s + 1:02d}" for s in range(train_sequences, n_seq)],
            "width": width, "height": height, "intrinsics": [fx, fy, cx, cy],
            "sensor": asdict(sensor), "room_size_m": list(scene.size),
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
                   help=f"scene: {', '.join(f'{k}' for k in PRESETS)} (default {DEFAULT_PRESET})")
    p.add_argument("--seed", type=int, default=0, help="trajectories and noise (default 0)")
    p.add_argument("--frames", type=int, default=60, help="frames per sequence (default 60)")
    p.add_argument("--train-sequences", type=int, default=3, help="training sequences (default 3)")
    p.add_argument("--test-sequences", type=int, default=1, help="test sequences (default 1)")
    p.add_argument("--width", type=int, default=DEFAULT_SIZE[0], help="image width (default 640)")
    p.add_argument("--height", type=int, default=DEFAULT_SIZE[1], help="image height (default 480)")
    p.add_argument("--intrinsics", help="'fx,fy,cx,cy' (default: Kinect 585,585,320,240 scaled to the size)")
    for name, what in (("depth-noise", "depth noise"), ("holes", "missing depth"), ("image-noise", "image noise"),
                       ("lighting-change", "exposure/lighting change between sequences"),
                       ("blur", "motion blur")):
        p.add_argument(f"--no-{name}", action="store_true", help=f"turn off {what}")
    p.add_argument("--clean", action="store_true", help="turn off all sensor effects (exact depth and poses)")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR (replaces an earlier dataset)")
    p.add_argument("--preview", metavar="PNG", help="also write a contact sheet of colour and depth frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> None:
    from .data import parse_intrinsics
    intr = None
    if args.intrinsics:
        K = parse_intrinsics(args.intrinsics)
        intr = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    sensor = SensorOptions.clean() if args.clean else SensorOptions(
        not args.no_depth_noise, not args.no_holes, not args.no_image_noise,
        not args.no_lighting_change, not args.no_blur)
    out = generate(args.out_dir, args.preset, args.seed, args.frames, args.train_sequences,
                   args.test_sequences, args.width, args.height, intr, sensor, args.force,
                   args.preview, progress=not args.quiet)
    n = args.train_sequences + args.test_sequences
    print(f"wrote {out}: preset {args.preset}, {n} sequences x {args.frames} frames "
          f"({args.train_sequences} train, {args.test_sequences} test)")
    if args.preview:
        print(f"preview {args.preview}")
