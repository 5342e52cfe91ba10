"""Partitions of mapping frames (scale/partition.py), the floor preset's rooms and routing descriptors: exact
geometry on synthetic views, file round trips, one-line errors."""

import dataclasses
import json

import numpy as np
import pytest

from sceneloc.errors import SceneLocError
from sceneloc.mapping.scene_map import Localization
from sceneloc.scale.partition import (
    AUTO_EXTENT_M,
    auto_partitions,
    camera_extent_m,
    folder_groups,
    make_partitions,
    read_layout,
    spatial_groups,
    view_features,
    write_layout,
)
from sceneloc.scale.routing import MapSet
from sceneloc.synth.dataset import SensorOptions, free_space, generate, walk_space
from sceneloc.synth.floor import FLOOR_ROOMS, make_scene


def poses_at(centres: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Camera-to-world poses ``(N, 4, 4)`` with these centres and optical axes (z columns)."""
    T = np.tile(np.eye(4), (len(centres), 1, 1))
    T[:, :3, 3] = centres
    T[:, :3, 2] = axes
    return T


def two_rooms(rng, n=40, gap=10.0):
    """Views of two rooms ``gap`` metres apart: n in each, cameras within 1 m of the room centre."""
    a = rng.uniform(-1, 1, (n, 3))
    b = rng.uniform(-1, 1, (n, 3)) + [gap, 0, 0]
    axes = rng.normal(size=(2 * n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return np.vstack([a, b]), axes


def test_spatial_groups_split_two_rooms_exactly():
    centres, axes = two_rooms(np.random.default_rng(0))
    groups = spatial_groups(view_features(centres, axes), 2, overlap_m=0.5)
    assert [g.tolist() for g in groups] == [list(range(40)), list(range(40, 80))]


def test_overlap_puts_a_boundary_view_in_both_partitions():
    rng = np.random.default_rng(1)
    centres, axes = two_rooms(rng, gap=4.0)
    middle = np.vstack([centres, [[2.0, 0.0, 0.0]]])
    ax = np.vstack([axes, [[0.0, 1.0, 0.0]]])
    without = spatial_groups(view_features(middle, ax), 2, overlap_m=0.0)
    with_overlap = spatial_groups(view_features(middle, ax), 2, overlap_m=1.5)
    assert sum(80 in g for g in without) == 1          # each frame in exactly one partition
    assert sum(80 in g for g in with_overlap) == 2     # the frame between the rooms in both
    assert all(len(g) < 81 for g in with_overlap)       # the rooms' own frames stay apart


def test_viewing_direction_separates_views_from_one_spot():
    # one camera position, looking east or west: two partitions by direction alone
    centres = np.zeros((20, 3))
    axes = np.array([[1.0, 0, 0]] * 10 + [[-1.0, 0, 0]] * 10)
    groups = spatial_groups(view_features(centres, axes), 2, overlap_m=0.1)
    assert sorted(g.tolist() for g in groups) == [list(range(10)), list(range(10, 20))]


def test_auto_partitions_keep_a_room_whole_and_split_a_floor():
    rng = np.random.default_rng(2)
    room = rng.uniform(0, 4, (500, 3))
    assert auto_partitions(room) == 1
    floor = rng.uniform(0, 1, (500, 3)) * [3 * AUTO_EXTENT_M, 1, 1]
    assert camera_extent_m(floor) > 2 * AUTO_EXTENT_M
    assert auto_partitions(floor) == int(np.ceil(camera_extent_m(floor) / AUTO_EXTENT_M))


def test_folder_groups_and_their_errors():
    names = ["seq-02/frame-000000.color.png", "seq-01/frame-000000.color.png", "seq-02/frame-000001.color.png"]
    assert [g.tolist() for g in folder_groups(names)] == [[1], [0, 2]]
    with pytest.raises(SceneLocError, match="1 folder"):
        folder_groups(["seq-01/a.png", "seq-01/b.png"])
    with pytest.raises(SceneLocError, match="--partitions 5"):
        spatial_groups(np.zeros((4, 6)), 5, 0.5)
    with pytest.raises(SceneLocError, match="--partition-by"):
        make_partitions(names, np.tile(np.eye(4), (3, 1, 1)), 1, method="rooms")


def test_layout_round_trip(tmp_path):
    centres, axes = two_rooms(np.random.default_rng(3))
    names = [f"seq-{i // 40 + 1:02d}/frame-{i:06d}.color.png" for i in range(80)]
    parts = make_partitions(names, poses_at(centres, axes), 2)
    assert [p.name for p in parts] == ["part-00", "part-01"]
    assert parts[0].frames == names[:40] and np.allclose(parts[1].centre, centres[40:].mean(0))
    write_layout(tmp_path, parts, {"dataset": "x"})
    back, info = read_layout(tmp_path)
    assert back == parts and info["dataset"] == "x"
    by_folder = make_partitions(names, poses_at(centres, axes), None, method="folder")
    assert [p.frames for p in by_folder] == [names[:40], names[40:]]
    (tmp_path / "partitions.json").write_text("{")
    with pytest.raises(SceneLocError, match="partitions.json: unreadable"):
        read_layout(tmp_path)


@pytest.mark.slow
def test_floor_preset_walks_one_room_per_sequence(tmp_path):
    scene = make_scene("floor")
    assert [r.name for r in scene.rooms] == [*FLOOR_ROOMS, "corridor"]
    assert [walk_space(scene, i).name for i in (0, 5, 6, 13)] == ["room", "corridor", "room", "desk"]
    # two training walks (the first two rooms) and a test walk (the first room again)
    out = generate(tmp_path / "floor", "floor", frames=3, train_sequences=2, test_sequences=1, width=64,
                   height=48, sensor=SensorOptions.clean(), progress=False)
    rooms = json.loads((out / "synth.json").read_text())["sequence_rooms"]
    assert rooms == {"seq-01": "room", "seq-02": "desk", "seq-03": "room"}
    for i in range(3):
        space = walk_space(scene, i if i < 2 else i - 2)
        centres = np.array([np.loadtxt(p)[:3, 3] for p in sorted((out / f"seq-{i + 1:02d}").glob("*.pose.txt"))])
        assert free_space(space, centres, slack=0.15).all()
        others = [r for r in scene.rooms if r is not space]
        assert not any(free_space(r, centres).any() for r in others)


def test_one_room_presets_keep_their_fingerprint():
    room = make_scene("room")
    assert room.rooms == []
    floor = make_scene("floor")
    assert floor.fingerprint() != floor.rooms[0].fingerprint()
    assert room.fingerprint() != dataclasses.replace(room, rooms=[room]).fingerprint()


class _FixedMap:
    """A stand-in map whose localize returns one fixed result and counts its calls."""

    def __init__(self, probability: float, inliers: int, pose: bool = True):
        self.calls = 0
        self.result = Localization(pose=np.eye(4) if pose else None, inliers=inliers, score=0.0, timings={},
                                   probability=probability)

    def localize(self, image, **kwargs):
        self.calls += 1
        return self.result


def _map_set(order: list[str], **maps: _FixedMap) -> MapSet:
    ms = MapSet(maps, {})   # no descriptors: route is replaced below
    ms.route = lambda image, top_k: ([(n, 1.0 - i / 10) for i, n in enumerate(order)], {})   # type: ignore[method-assign]
    return ms


def test_the_first_routed_confident_pose_wins_and_later_maps_are_not_tried():
    # a later map whose calibration saturates (P = 1.0) must not beat the first routed map's confident pose
    first, saturated = _FixedMap(0.8, 100), _FixedMap(1.0, 5000)
    res = _map_set(["first", "saturated"], first=first, saturated=saturated).localize(np.zeros((4, 4, 3), np.uint8))
    assert res.name == "first" and res.result is first.result and saturated.calls == 0


def test_without_a_confident_pose_the_most_probable_then_most_inliers_wins():
    a, b, c = _FixedMap(0.3, 900), _FixedMap(0.4, 100), _FixedMap(0.0, 0, pose=False)
    res = _map_set(["c", "a", "b"], a=a, b=b, c=c).localize(np.zeros((4, 4, 3), np.uint8), top_k=3)
    assert res.name == "b" and (a.calls, b.calls, c.calls) == (1, 1, 1)
    tie_a, tie_b = _FixedMap(0.3, 100), _FixedMap(0.3, 900)
    res = _map_set(["tie_a", "tie_b"], tie_a=tie_a, tie_b=tie_b).localize(np.zeros((4, 4, 3), np.uint8))
    assert res.name == "tie_b"
    failed = _FixedMap(0.0, 0, pose=False)
    res = _map_set(["failed"], failed=failed).localize(np.zeros((4, 4, 3), np.uint8))
    assert res.name is None and res.result.pose is None
