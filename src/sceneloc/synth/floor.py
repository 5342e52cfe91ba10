"""The ``floor`` preset of :mod:`sceneloc.synth.dataset`: several furnished rooms and a corridor on one floor.

The rooms are the single-room presets (:mod:`sceneloc.synth.scenes`) moved side by side along a
corridor, each a closed box with its door drawn on its walls; the corridor is a long box of its
own with pictures and doors along it. Each space keeps its own camera region, obstacles and
viewing rules (a ``Scene`` in ``Scene.rooms``): a sequence walks through one space, as a person
maps a building room by room, so the training walks cover every space and the test walks are
separate walks through them. This module also holds the table of every preset (:data:`PRESETS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.synth.scenes import PRESETS as ROOM_PRESETS
from sceneloc.synth.scenes import WHITE, Quad, Scene, poster, rect, room_shell, vec3

#: rooms of the floor, left to right along the corridor (the single-room presets)
FLOOR_ROOMS = ("room", "desk", "kitchen", "living", "stairs")
ROOM_GAP_M = 0.3          # wall thickness between neighbouring rooms
CORRIDOR_DEPTH_M = 2.4    # the corridor runs along y < 0, in front of every room


def translated(scene: Scene, offset: np.ndarray) -> Scene:
    """``scene`` moved by ``offset (3,)`` metres: its quads, camera region, obstacles, lamp and
    look half-space."""
    o = np.asarray(offset, np.float64)
    quads = [Quad(q.origin + o, q.e1, q.e2, q.texture, q.repeat, q.tint, q.interest) for q in scene.quads]
    lo, hi = scene.camera_region
    half = None
    if scene.look_halfspace is not None:
        normal, limit = scene.look_halfspace
        half = (normal, float(limit + np.dot(normal, o)))
    return replace(scene, quads=quads, camera_region=(lo + o, hi + o),
                   obstacles=[(a + o, b + o) for a, b in scene.obstacles],
                   light=(scene.light[0] + o[0], scene.light[1] + o[1], scene.light[2] + o[2]), look_halfspace=half)


def _corridor(length: float) -> Scene:
    """A ``length`` x 2.4 x 2.6 m corridor along x at ``y`` in ``[-2.4, 0]``: doors and pictures on its walls."""
    sx, sy, sz = length, CORRIDOR_DEPTH_M, 2.6
    q = room_shell(sx, sy, sz, {
        (0, 1, 0): ("stripes", (0.6, 2.5), (0.9, 0.9, 0.85)),
        (1, 0, 0): ("brick", (1.0, 0.5), (0.8, 0.8, 0.9)),
        (0, -1, 0): ("wallpaper", (sx, sz), (0.85, 0.9, 0.95)),
        (-1, 0, 0): ("brick", (1.0, 0.5), (0.75, 0.8, 0.85)),
    }, floor=("tiles", (0.6, 0.6), (0.7, 0.72, 0.75)), ceiling=("plain", (1.0, 1.0), WHITE))
    pictures = ("hubble", "moon", "retina", "colorwheel", "coffee", "chelsea", "rocket", "astronaut")
    for i, x in enumerate(np.arange(1.2, sx - 0.8, 2.6)):
        q.append(poster((0, 1, 0), (x, 0, 1.5), 0.8, 0.6, pictures[i % len(pictures)]))           # far wall
        q.append(rect((x + 1.2, sy - 0.005, 1.0), (0, -1, 0), 0.9, 2.0, "panel", tint=(0.55, 0.7, 0.8)))  # doors
        q.append(poster((0, -1, 0), (x, sy, 1.6), 0.6, 0.5, pictures[(i + 3) % len(pictures)]))
    scene = Scene("corridor", f"{sx:.1f} x {sy:.1f} x {sz:.1f} m corridor", (sx, sy, sz), q,
                  (vec3(0.7, 0.7, 1.2), vec3(sx - 0.7, sy - 0.7, 1.7)), [], clearance=0.4,
                  view_range=(0.8, 3.5), light=(sx / 2, sy / 2, sz - 0.1), waypoints=8)
    return translated(scene, vec3(0, -sy - ROOM_GAP_M, 0))


def _preset_floor() -> Scene:
    """Five furnished rooms side by side along a corridor (six spaces, about 24 x 6 m)."""
    rooms, x = [], 0.0
    for name in FLOOR_ROOMS:
        room = ROOM_PRESETS[name]()
        rooms.append(translated(room, vec3(x, 0, 0)))
        x += room.size[0] + ROOM_GAP_M
    rooms.append(_corridor(x - ROOM_GAP_M))
    quads = [q for r in rooms for q in r.quads]
    lo = np.min([r.camera_region[0] for r in rooms], axis=0)
    hi = np.max([r.camera_region[1] for r in rooms], axis=0)
    size = (x - ROOM_GAP_M, max(r.size[1] for r in rooms) + CORRIDOR_DEPTH_M + ROOM_GAP_M,
            max(r.size[2] for r in rooms))
    return Scene("floor", f"{len(FLOOR_ROOMS)} furnished rooms ({', '.join(FLOOR_ROOMS)}) along a corridor, "
                 f"{size[0]:.1f} x {size[1]:.1f} m: one walk per space and sequence (large, many rooms)",
                 size, quads, (lo, hi), [o for r in rooms for o in r.obstacles],
                 light=(size[0] / 2, 0.0, 2.5), rooms=rooms)


PRESETS: dict[str, Callable[[], Scene]] = {**ROOM_PRESETS, "floor": _preset_floor}


def make_scene(preset: str) -> Scene:
    """The named preset's scene (deterministic: it depends on the name only)."""
    if preset not in PRESETS:
        raise SceneLocError(f"--preset {preset!r}: unknown preset (choose from {', '.join(PRESETS)})")
    return PRESETS[preset]()
