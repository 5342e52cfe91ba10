"""Scene descriptions of :mod:`sceneloc.synth.dataset`: textured planar rectangles and the presets.

A scene is a list of :class:`Quad` (walls, floor, ceiling, furniture built from boxes, posters, a
staircase) plus what trajectories need to know about free space (:class:`Scene`). World frame:
metres, z up, floor at ``z = 0``. Presets are listed in :data:`PRESETS`; each is deterministic
(it depends on its name only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np

from sceneloc.errors import SceneLocError

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
    # (normal, offset): the camera looks only at surface points p with normal . p < offset, one part
    # of the room, as a real capture films a corner of a room rather than turning round it; None: anywhere
    look_halfspace: tuple[tuple[float, float, float], float] | None = None
    # a texture on several quads starts at a random point of itself on each after the first: two book
    # shelves or the faces of one box then show different spines and crops, not copies of each other
    unique_copies: bool = False
    # spaces of a many-room scene (synth/floor.py), each with its own camera region and viewing rules: a
    # sequence walks through one of them; empty: the camera walks anywhere in camera_region
    rooms: list[Scene] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A short hash of everything that shapes the rendered frames (every field but the description;
        ``rooms`` only where there are some, so the one-room presets keep their hash): a rendering made
        by an older version of a preset does not pass for this one."""
        shape = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                 if f.name != "description" and not (f.name == "rooms" and not self.rooms)}
        return hashlib.sha1(repr(shape).encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    """``value`` as nested lists of plain values (arrays rounded to 1 um, dataclasses by field): a stable repr."""
    if isinstance(value, np.ndarray):
        return value.round(6).tolist()
    if is_dataclass(value) and not isinstance(value, type):
        return [_plain(getattr(value, f.name)) for f in fields(value)]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def vec3(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def rect(center, normal, width: float, height: float, texture: str, up=(0.0, 0.0, 1.0),
         repeat: tuple[float, float] | None = None, tint=(1.0, 1.0, 1.0)) -> Quad:
    """A ``width`` x ``height`` rectangle centred at ``center``, visible from the side ``normal``
    points to, with ``up`` (orthogonal to ``normal``) pointing to the top edge of its texture."""
    c, n, up = vec3(*center), vec3(*normal), vec3(*up)
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
    lo, hi = vec3(*lo), vec3(*hi)
    quads = []
    for n, up in _FACES.items():
        if n in skip:
            continue
        nv = vec3(*n)
        axis = int(np.argmax(np.abs(nv)))
        center = (lo + hi) / 2
        center[axis] = hi[axis] if nv[axis] > 0 else lo[axis]
        size = hi - lo
        upv = vec3(*up)
        right = np.cross(-nv, upv)
        w, h = abs(size @ right), abs(size @ upv)
        if isinstance(texture, dict):
            tex, rep, tn = texture[n] if n in texture else texture["default"]
        else:
            tex, rep, tn = texture, repeat, tint
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


def poster(wall_normal, center, w: float, h: float, texture: str) -> Quad:
    """A picture hanging 1 cm in front of a wall (no z-fighting: the z-buffer sees a 1 cm step)."""
    c = vec3(*center) + 0.01 * vec3(*wall_normal)
    q = rect(c, wall_normal, w, h, texture)
    q.interest = 2.0
    return q


def room_shell(sx: float, sy: float, sz: float, walls: dict, floor, ceiling) -> list[Quad]:
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
    q = room_shell(sx, sy, sz, {
        (0, 1, 0): ("brick", (1.0, 0.5), (0.75, 0.8, 0.95)),      # wall y=0, bricks (repetitive)
        (1, 0, 0): ("plain", (1.0, 1.0), CREAM),                   # wall x=0, low texture
        (0, -1, 0): ("stripes", (0.6, 2.5), (0.95, 0.9, 0.85)),    # wall y=sy, wallpaper
        (-1, 0, 0): ("plain", (1.0, 1.0), (0.85, 0.9, 0.8)),       # wall x=sx
    }, floor=("wood", (1.2, 1.2), (0.9, 0.9, 0.9)), ceiling=("plain", (1.0, 1.0), WHITE))
    q += [
        poster((1, 0, 0), (0, 0.9, 1.5), 0.9, 0.9, "astronaut"),
        poster((1, 0, 0), (0, 2.1, 1.4), 0.9, 0.6, "rocket"),
        poster((0, -1, 0), (1.0, sy, 1.55), 0.9, 0.6, "coffee"),
        poster((0, -1, 0), (2.3, sy, 1.5), 0.7, 0.7, "hubble"),
        poster((-1, 0, 0), (sx, 1.9, 1.5), 0.9, 0.6, "chelsea"),
        poster((0, 1, 0), (2.4, 0, 1.6), 0.6, 0.45, "retina"),
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
    obstacles = [(vec3(0.9, 1.2, 0), vec3(2.3, 2.0, 0.75)), (vec3(*cabinet[0]), vec3(*cabinet[1]) + vec3(0, 0, 0.3)),
                 (vec3(*shelf[0]), vec3(*shelf[1])), (vec3(*sofa[0]), vec3(2.5, 0.85, 0.85))]
    return Scene("room", "3.2 x 3.0 x 2.5 m living room, posters and furniture (default, moderate)",
                 (sx, sy, sz), q, (vec3(0.55, 0.55, 1.1), vec3(sx - 0.55, sy - 0.55, 1.8)), obstacles,
                 light=(1.6, 1.5, 2.45), waypoints=9, sweep=True)


def _preset_desk() -> Scene:
    """Small and easy: a desk corner seen from a chair, ~1 m^3 of camera motion (like 7-Scenes' Heads)."""
    sx, sy, sz = 2.2, 1.8, 2.4
    q = room_shell(sx, sy, sz, {
        (0, 1, 0): ("stripes", (0.6, 2.5), (0.9, 0.95, 0.9)),
        (1, 0, 0): ("plain", (1.0, 1.0), CREAM),
        (0, -1, 0): ("plain", (1.0, 1.0), (0.85, 0.85, 0.95)),
        (-1, 0, 0): ("brick", (1.0, 0.5), (0.7, 0.75, 0.9)),
    }, floor=("tiles", (0.6, 0.6), GREY), ceiling=("plain", (1.0, 1.0), WHITE))
    q += [
        poster((0, -1, 0), (0.7, sy, 1.45), 0.7, 0.7, "astronaut"),
        poster((0, -1, 0), (1.6, sy, 1.3), 0.6, 0.4, "coffee"),
        poster((1, 0, 0), (0, 1.0, 1.5), 0.5, 0.5, "colorwheel"),
    ]
    q += table(1.1, 1.45, 1.4, 0.6, 0.74, "wood", (0.75, 0.8, 0.9))
    q += box((0.7, 1.6, 0.74), (1.3, 1.66, 1.12), {(0, -1, 0): ("rocket", None, (1, 1, 1)),
                                                    "default": ("plain", (0.3, 0.3), (0.15, 0.15, 0.15))})  # monitor
    q += box((0.5, 1.3, 0.74), (0.72, 1.6, 0.78), {(0, 0, 1): ("text", None, (1, 1, 1)),
                                                   "default": ("plain", (0.3, 0.3), (0.6, 0.3, 0.2))})     # book
    q += box((1.45, 1.3, 0.74), (1.55, 1.4, 0.86), "clock", (0.2, 0.2), (0.4, 0.6, 0.9))                 # mug
    q += box((1.6, 1.25, 0.74), (1.75, 1.55, 0.9), "chelsea", None)                                       # photo box
    obstacles = [(vec3(0.4, 1.15, 0), vec3(1.8, 1.75, 1.12))]
    return Scene("desk", "2.2 x 1.8 x 2.4 m study, a desk corner seen from a chair (small, easy)",
                 (sx, sy, sz), q, (vec3(0.6, 0.35, 1.05), vec3(1.6, 0.95, 1.55)), obstacles,
                 clearance=0.3, view_range=(0.6, 1.6), light=(1.1, 0.9, 2.35), waypoints=6)


def _preset_kitchen() -> Scene:
    """Large and harder: identical cabinet doors (repetition), low-texture walls, more depth range."""
    sx, sy, sz = 4.4, 3.4, 2.6
    q = room_shell(sx, sy, sz, {
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
        poster((1, 0, 0), (0, 1.7, 1.5), 1.0, 0.7, "coffee"),
        poster((0, -1, 0), (1.2, sy, 1.5), 0.8, 0.8, "chelsea"),
        poster((0, -1, 0), (3.3, sy, 1.4), 0.9, 0.6, "rocket"),
        poster((-1, 0, 0), (sx, 2.3, 1.5), 0.7, 0.7, "immunohistochemistry"),
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
    obstacles = [(vec3(0.3, 0.02, 0), vec3(3.9, 0.62, 0.88)), (vec3(0.3, 0.02, 1.45), vec3(3.9, 0.37, 2.15)),
                 (vec3(1.45, 1.65, 0), vec3(2.95, 2.55, 0.9)), (vec3(*fridge[0]), vec3(*fridge[1])),
                 (vec3(*shelf[0]), vec3(*shelf[1]))]
    return Scene("kitchen", "4.4 x 3.4 x 2.6 m kitchen, identical cabinet doors, low-texture walls (large, harder)",
                 (sx, sy, sz), q, (vec3(0.6, 0.8, 1.1), vec3(sx - 0.6, sy - 0.6, 1.8)), obstacles,
                 view_range=(0.9, 3.2), light=(2.2, 1.7, 2.55), waypoints=9, sweep=True)


def _preset_stairs() -> Scene:
    """A narrow staircase of 12 identical steps between brick walls (repetitive, like 7-Scenes' Stairs)."""
    n_steps, run, rise = 12, 0.25, 0.18
    x0, width = 0.9, 1.6
    top = n_steps * rise
    sx, sy, sz = x0 + n_steps * run + 1.0, width, top + 2.5
    q = room_shell(sx, sy, sz, {
        (0, 1, 0): ("brick", (1.0, 0.5), (0.7, 0.75, 0.9)),
        (1, 0, 0): ("plain", (1.0, 1.0), CREAM),
        (0, -1, 0): ("brick", (1.0, 0.5), (0.75, 0.8, 0.95)),
        (-1, 0, 0): ("plain", (1.0, 1.0), (0.85, 0.85, 0.8)),
    }, floor=("carpet", (0.5, 0.5), GREY), ceiling=("plain", (1.0, 1.0), WHITE))
    obstacles = []
    for i in range(n_steps):  # every step the same: same textures, same tiling phase
        lo, hi = vec3(x0 + i * run, 0, 0), vec3(x0 + (i + 1) * run, width, (i + 1) * rise)
        if i == n_steps - 1:
            hi[0] = sx  # the top landing
        q += box(lo, hi, {(0, 0, 1): ("wood", (0.5, 0.25), (0.7, 0.8, 0.9)),
                          (-1, 0, 0): ("plain", (0.5, 0.5), (0.85, 0.85, 0.85)),
                          "default": ("plain", (0.5, 0.5), (0.7, 0.7, 0.7))},
                 skip=((0, 0, -1), (1, 0, 0), (0, 1, 0), (0, -1, 0)))
        obstacles.append((lo, hi))
    q += [  # a few pictures so that the repetition is not hopeless
        poster((0, 1, 0), (0.5, 0, 1.4), 0.6, 0.6, "astronaut"),
        poster((0, -1, 0), (2.2, sy, 2.3), 0.6, 0.4, "coffee"),
        poster((-1, 0, 0), (sx, 0.8, top + 1.4), 0.8, 0.8, "hubble"),
        poster((0, 1, 0), (3.6, 0, top + 1.2), 0.5, 0.5, "chelsea"),
    ]
    return Scene("stairs", "staircase of 12 identical steps between brick walls, 1.6 m wide (repetitive, hard)",
                 (sx, sy, sz), q, (vec3(0.4, 0.45, 1.0), vec3(sx - 0.45, sy - 0.45, top + 1.6)), obstacles,
                 clearance=0.6, view_range=(0.7, 2.6), light=(sx / 2, sy / 2, sz - 0.1), waypoints=6)


def _shelf_unit(lo, hi, front: tuple[int, int, int], tint=(0.5, 0.6, 0.7)) -> list[Quad]:
    """A bookshelf box whose ``front`` face (outward normal) shows book spines."""
    return box(lo, hi, {front: ("books", (0.9, 0.9), (1, 1, 1)), "default": ("wood", (0.8, 0.8), tint)})


def _clutter(x: float, y: float, z: float, items: list[tuple[float, float, float, str]]) -> list[Quad]:
    """Small boxes standing side by side along x from ``(x, y, z)``: ``(w, d, h, texture)`` each,
    a photo texture stretched over every face (mugs, boxes, books on a surface)."""
    quads = []
    for w, d, h, tex in items:
        quads += box((x, y - d / 2, z), (x + w, y + d / 2, z + h), tex, (max(w, d), h))
        x += w + 0.05
    return quads


def _preset_living() -> Scene:
    """The demo's scene: a 4.4 x 3.8 x 2.6 m living room full of things to recognise.

    Every wall has its own texture (wallpaper, brick, stone, a green mural), pictures and furniture (bookshelves,
    a TV unit, a sofa, a desk, a cabinet) with clutter on it; the camera stays in the middle of the room, at least
    about 0.8 m from any surface, and looks at furniture and pictures 1-3.2 m away (the walls
    themselves draw little attention), as someone filming a room would. It films one half of the room,
    the corner with the bookshelf, the TV and the sofa, as 7-Scenes' captures film part of a room: with
    walks that turned round the whole room, a 3-minute head fitted its own training pixels only to
    within 10 cm for 64 % of them and placed 10-23 % of the test frames by PnP
    (docs/history/2026-11-29-demo-room-capture.md).
    """
    sx, sy, sz = 4.4, 3.8, 2.6
    # Every wall its own texture, each stretched once over the wall: a wallpaper tiled every 1.3 m on
    # three walls (tints are invisible to a grey-level encoder) made one patch of wall look like
    # dozens of others, an ambiguity real rooms rarely have (the demo's head then fitted its own
    # training pixels to 9 cm only, against 3 cm on redkitchen).
    q = room_shell(sx, sy, sz, {
        (0, 1, 0): ("wallpaper", (sx, sz), (0.95, 0.9, 0.85)),      # wall y=0: shelves, TV
        (1, 0, 0): ("brick", (sy, sz), (0.95, 0.9, 0.85)),          # wall x=0: sofa
        (0, -1, 0): ("gravel", (sx, sz), (0.8, 0.95, 0.95)),        # wall y=sy: desk
        (-1, 0, 0): ("grass", (sy, sz), (0.9, 0.85, 0.95)),         # wall x=sx: door, cabinet
    }, floor=("wood", (sx, sy), (0.9, 0.9, 0.9)), ceiling=("plain", (1.0, 1.0), WHITE))
    for quad in q:
        quad.interest = 0.1     # the camera looks at the things in the room, not at bare wall
    q += [
        poster((0, 1, 0), (0.9, 0, 2.05), 0.9, 0.55, "hubble"),
        poster((0, 1, 0), (3.2, 0, 1.75), 1.2, 0.7, "rocket"),         # the "TV" above the unit
        poster((1, 0, 0), (0, 1.3, 1.55), 0.9, 0.9, "astronaut"),
        poster((1, 0, 0), (0, 2.6, 1.5), 0.8, 0.6, "coffee"),
        poster((0, -1, 0), (1.3, sy, 1.7), 0.8, 0.6, "chelsea"),
        poster((0, -1, 0), (3.4, sy, 1.65), 0.9, 0.65, "moon"),
        poster((-1, 0, 0), (sx, 2.7, 1.55), 0.8, 0.8, "retina"),
        poster((-1, 0, 0), (sx, 0.7, 1.9), 0.5, 0.5, "colorwheel"),
        rect((sx - 0.005, 1.55, 1.0), (-1, 0, 0), 0.85, 2.0, "panel", tint=(0.55, 0.7, 0.8)),   # door
        rect((2.2, 1.9, 0.004), (0, 0, 1), 2.0, 1.4, "ihc", up=(0, 1, 0)),                      # rug
    ]
    # wall y=0: a tall bookshelf and a low TV unit with things on it
    shelf = ((0.3, 0.02, 0.0), (1.6, 0.37, 1.8))
    q += _shelf_unit(*shelf, front=(0, 1, 0))
    tv_unit = ((2.4, 0.02, 0.0), (4.0, 0.47, 0.5))
    q += box(*tv_unit, {(0, 1, 0): ("panel", (0.4, 0.5), (0.6, 0.55, 0.5)),
                        "default": ("wood", (0.8, 0.8), (0.5, 0.55, 0.6))})
    q += _clutter(2.55, 0.25, 0.5, [(0.25, 0.2, 0.3, "camera"), (0.15, 0.15, 0.12, "coins"),
                                    (0.3, 0.25, 0.22, "text"), (0.2, 0.2, 0.35, "clock")])
    # wall x=0: a sofa with a side table
    sofa = ((0.05, 0.9, 0.0), (0.85, 2.9, 0.45))
    q += box(*sofa, "carpet", (0.5, 0.5), (0.45, 0.5, 0.8))
    q += box((0.05, 0.9, 0.45), (0.25, 2.9, 0.85), "carpet", (0.5, 0.5), (0.45, 0.5, 0.8))   # backrest
    q += box((0.1, 2.95, 0.0), (0.6, 3.45, 0.55), "wood", (0.5, 0.5), (0.7, 0.8, 0.9))       # side table
    q += _clutter(0.15, 3.2, 0.55, [(0.2, 0.2, 0.25, "coffee"), (0.15, 0.15, 0.3, "page")])
    # wall y=sy: a desk with a monitor, a lamp box and books
    desk = ((0.9, 3.2, 0.0), (2.5, 3.78, 0.75))
    q += table(1.7, 3.49, 1.6, 0.58, 0.75, "wood", (0.8, 0.75, 0.7))
    q += box((1.3, 3.6, 0.75), (2.0, 3.66, 1.15), {(0, -1, 0): ("immunohistochemistry", None, (1, 1, 1)),
                                                   "default": ("plain", (0.3, 0.3), (0.15, 0.15, 0.15))})
    q += _clutter(1.0, 3.35, 0.75, [(0.2, 0.28, 0.06, "text"), (0.1, 0.1, 0.12, "clock")])
    q += _clutter(2.1, 3.45, 0.75, [(0.3, 0.22, 0.2, "coins")])
    shelf2 = ((2.9, 3.43, 0.0), (4.1, 3.78, 1.2))
    q += _shelf_unit(*shelf2, front=(0, -1, 0), tint=(0.7, 0.6, 0.5))
    q += _clutter(3.0, 3.6, 1.2, [(0.3, 0.2, 0.3, "astronaut"), (0.2, 0.2, 0.2, "gravel"),
                                  (0.35, 0.25, 0.25, "chelsea")])
    # wall x=sx: a cabinet beside the door
    cabinet = ((3.95, 2.2, 0.0), (4.38, 3.3, 0.9))
    q += box(*cabinet, {(-1, 0, 0): ("panel", (0.55, 0.9), (0.5, 0.75, 0.9)),
                        "default": ("wood", (0.8, 0.8), (0.6, 0.7, 0.8))})
    q += _clutter(4.0, 2.5, 0.9, [(0.25, 0.3, 0.35, "rocket")])
    # the middle: a coffee table with books and boxes
    q += table(2.2, 1.9, 1.0, 0.6, 0.45, "wood", (0.6, 0.7, 0.85))
    q += _clutter(1.85, 1.9, 0.45, [(0.25, 0.3, 0.05, "page"), (0.15, 0.15, 0.15, "coins"),
                                    (0.2, 0.14, 0.1, "camera")])
    for quad in q:
        if quad.interest == 1.0 and quad.normal[2] < 0.9:   # furniture sides and fronts
            quad.interest = 1.5
    obstacles = [(vec3(*shelf[0]), vec3(*shelf[1])), (vec3(*tv_unit[0]), vec3(4.0, 0.47, 0.9)),
                 (vec3(*sofa[0]), vec3(0.85, 2.9, 0.85)), (vec3(*desk[0]), vec3(2.5, 3.78, 1.15)),
                 (vec3(*shelf2[0]), vec3(4.1, 3.78, 1.5)), (vec3(*cabinet[0]), vec3(4.38, 3.3, 1.25)),
                 (vec3(1.7, 1.6, 0.0), vec3(2.7, 2.2, 0.6))]
    return Scene("living", "4.4 x 3.8 x 2.6 m living room full of furniture, pictures and clutter, filmed "
                 "towards its bookshelf, TV and sofa (the demo's scene; a fair test of a real capture)",
                 (sx, sy, sz), q, (vec3(1.4, 1.2, 1.1), vec3(3.0, 2.6, 1.7)), obstacles, clearance=0.5,
                 view_range=(1.0, 3.2), light=(2.2, 1.9, 2.55), waypoints=9, unique_copies=True,
                 look_halfspace=((1.0, 1.0, 0.0), 0.5 * (sx + sy)))


PRESETS: dict[str, Callable[[], Scene]] = {
    "living": _preset_living, "room": _preset_room, "desk": _preset_desk, "kitchen": _preset_kitchen,
    "stairs": _preset_stairs,
}
#: the demo's scene (``sceneloc demo``); ``sceneloc synth`` keeps ``room`` as its default
DEMO_PRESET = "living"
DEFAULT_PRESET = "room"


def make_scene(preset: str) -> Scene:
    """The named preset's scene (deterministic: it depends on the name only)."""
    if preset not in PRESETS:
        raise SceneLocError(f"--preset {preset!r}: unknown preset (choose from {', '.join(PRESETS)})")
    return PRESETS[preset]()
