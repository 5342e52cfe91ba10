"""Fuzz suite (Hypothesis): random bytes and edge values for images, depth maps, pose files,
intrinsics, config.json and the map's files, and boundary values of the CLI's options. Every outcome
must be a one-line SceneLocError (exit 2) or a valid result: never another exception, never a case
that runs past ``CASE_TIMEOUT_S`` (a hang), never a pose with probability > 0.5 from invalid input.

Derandomized (the same cases every run) and without an example database, so that it is repeatable
and writes nothing; ``pytest -s tests/test_fuzz.py`` prints the number of cases run.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bad_inputs import time_limit
from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.data.readers import parse_intrinsics, read_depth, read_image
from sceneloc.errors import SceneLocError
from sceneloc.geometry import read_pose_file
from sceneloc.mapping.scene_map import Map
from sceneloc.validation import depth_in_metres

#: A case running longer than this is a hang (generous: the machine is shared and small).
CASE_TIMEOUT_S = 30
CASES: Counter = Counter()


def fuzz(n: int):
    """Hypothesis settings of one fuzz test: ``n`` cases, repeatable, no deadline (the alarm is ours)."""
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@contextmanager
def case(name: str):
    """One fuzz case: counted, and failed if it runs past CASE_TIMEOUT_S."""
    CASES[name] += 1
    with time_limit(CASE_TIMEOUT_S, TimeoutError(f"{name}: a case ran past {CASE_TIMEOUT_S} s")):
        yield


@pytest.fixture(scope="module", autouse=True)
def report_case_count():
    yield
    print(f"\nfuzz cases run: {sum(CASES.values())} ({dict(CASES)})", file=sys.stderr)


def one_line(e: SceneLocError) -> None:
    message = str(e)
    assert message and "\n" not in message and "Traceback" not in message, message


@contextmanager
def refusal():
    """A SceneLocError raised inside ends the block (after checking its message is one line)."""
    try:
        yield
    except SceneLocError as e:
        one_line(e)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_like() -> st.SearchStrategy[bytes]:
    """A PNG signature and IHDR of random size, bit depth and colour type, then random bytes: files
    that pass the cheap header checks and fail (or not) in the decoder."""
    ihdr = st.builds(lambda w, h, bits, colour: struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, 0),
                     st.integers(0, 70000), st.integers(0, 70000), st.sampled_from([1, 2, 4, 8, 16, 3, 0]),
                     st.sampled_from([0, 2, 3, 4, 6, 5]))
    return st.builds(lambda head, tail: b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", head) + tail, ihdr,
                     st.binary(max_size=300))


def valid_png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


file_bytes = st.one_of(st.binary(max_size=400), png_like(), st.just(b""),
                       st.builds(valid_png, hnp.arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9),
                                                                           st.just(3)))),
                       st.builds(valid_png, hnp.arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9)))))


# ------------------------------------------------------------------------------ images and depth


@fuzz(250)
@given(data=file_bytes)
def test_image_and_depth_files(tmp_path, data):
    p = tmp_path / "f.png"
    p.write_bytes(data)
    with case("image/depth file"):
        for reader in (read_image, read_depth):
            with refusal():
                out = reader(p)
                if reader is read_image:
                    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
                else:
                    assert out.dtype == np.float32 and out.ndim == 2 and np.all(np.isfinite(out)) and out.min() >= 0


edge_floats = st.sampled_from([0.0, -0.0, -1.0, 1e-30, 1e30, math.inf, -math.inf, math.nan, 65535.0, 0.5])


@fuzz(200)
@given(depth=st.one_of(
    hnp.arrays(np.uint16, st.tuples(st.integers(1, 6), st.integers(1, 6))),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)),
               elements=st.one_of(st.floats(-10, 1e6, width=32), edge_floats.map(np.float32))),
    hnp.arrays(st.sampled_from([np.uint8, np.int32, np.float64, np.bool_]), st.tuples(st.integers(0, 4),
                                                                                       st.integers(0, 4))),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))),
    scale=st.one_of(st.none(), edge_floats, st.floats(1e-6, 10)))
def test_depth_arrays(depth, scale):
    with case("depth array"), refusal():
        out = depth_in_metres(depth, "depth", scale)
        assert out.dtype == np.float32 and out.shape == depth.shape
        assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() > 0


# ---------------------------------------------------------------------------- pose files, intrinsics


pose_line = st.builds(lambda name, nums, note: " ".join([name, *nums]) + note,
                      st.sampled_from(["a.png", "seq-01/frame-000000.color.png", "#", "x"]),
                      st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                         st.sampled_from(["nan", "1", "0", "-0", "1e400", "abc", ""])),
                               max_size=10),
                      st.sampled_from(["", " # failed: no pose", " #"]))


@fuzz(100)
@given(content=st.one_of(st.binary(max_size=60), st.sampled_from([b"colour", b" depth\n", b"Colour", b""])))
def test_pose_camera_file(overfit_scene, tmp_path, content):
    root = tmp_path / "scene"
    if not root.exists():
        shutil.copytree(overfit_scene, root, symlinks=True)
    (root / "pose-camera.txt").write_bytes(content)
    with case("pose-camera.txt"), refusal():
        assert load_scene(root).pose_camera in ("depth", "colour")


@fuzz(250)
@given(content=st.one_of(st.binary(max_size=300), st.lists(pose_line, max_size=5).map("\n".join).map(str.encode)))
def test_pose_files(tmp_path, content):
    p = tmp_path / "poses.txt"
    p.write_bytes(content)
    with case("pose file"), refusal():
        for r in read_pose_file(p):
            if r.pose is not None:
                R = r.pose[:3, :3]
                assert np.all(np.isfinite(r.pose))
                np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)


@fuzz(250)
@given(spec=st.one_of(st.text(max_size=40),
                      st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                         st.sampled_from(["", "nan", "0", "-1", "1e999", " 5"])),
                               max_size=6).map(",".join)))
def test_intrinsics_option(spec):
    with case("intrinsics option"), refusal():
        K = parse_intrinsics(spec)
        assert K.shape == (3, 3) and np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0


# ------------------------------------------------------------------------------------- map files


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 1000), st.floats(allow_nan=False),
                                     st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=8)


@pytest.fixture(scope="module")
def map_copy(tiny_map, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz_map") / "map"
    shutil.copytree(tiny_map, d)
    return d


def mutate(config: dict, key_path: list, value) -> dict:
    """``config`` with the entry at ``key_path`` (into nested dicts) replaced by ``value`` (or deleted)."""
    out = json.loads(json.dumps(config))
    node = out
    for k in key_path[:-1]:
        node = node[k]
    if value == "<delete>":
        node.pop(key_path[-1], None)
    else:
        node[key_path[-1]] = value
    return out


CONFIG_PATHS = [["format_version"], ["network"], ["network", "arch"], ["network", "width"], ["network", "stride"],
                ["input_height"], ["image_size"], ["intrinsics"], ["normalisation"], ["normalisation", "center"],
                ["normalisation", "scale"], ["confidence_network"], ["has_confidence"], ["confidence"],
                ["depth_to_pose_scale"], ["pose_camera"]]


@fuzz(80)
@given(key_path=st.sampled_from(CONFIG_PATHS), value=st.one_of(json_values, st.just("<delete>")),
       whole=st.one_of(st.none(), json_values, st.binary(max_size=40)))
def test_config_json(tiny_map, map_copy, key_path, value, whole):
    good = json.loads((tiny_map / "config.json").read_text())
    cfg = map_copy / "config.json"
    if whole is None:
        cfg.write_text(json.dumps(mutate(good, key_path, value)))
    else:
        cfg.write_bytes(whole if isinstance(whole, bytes) else json.dumps(whole).encode())
    with case("config.json"), refusal():
        try:
            Map.load(map_copy, device="cpu")
        finally:
            cfg.write_text(json.dumps(good))


MAP_FILES = ["coordinates.pt", "confidence.pt", "scene_view.npz", "scene_cloud.npz", "config.json"]


@fuzz(60)
@given(name=st.sampled_from(MAP_FILES), how=st.sampled_from(["truncate", "random", "empty", "flip"]),
       where=st.floats(0, 1), junk=st.binary(min_size=1, max_size=200))
def test_map_files(tiny_map, map_copy, name, how, where, junk):
    good = (tiny_map / name).read_bytes()
    cut = int(where * len(good))
    bad = {"truncate": good[:cut], "random": junk, "empty": b"",
           "flip": good[:cut] + bytes([good[cut % len(good)] ^ 0xFF]) + good[cut + 1:]}[how]
    (map_copy / name).write_bytes(bad)
    with case("map file"), refusal():
        try:
            Map.load(map_copy, device="cpu")
        finally:
            (map_copy / name).write_bytes(good)


# --------------------------------------------------------------------------------- localization


@fuzz(25)
@given(kind=st.sampled_from(["noise", "flat", "tiny", "huge_values", "wrong_dtype", "grey"]),
       K=st.one_of(st.none(), st.lists(edge_floats, min_size=4, max_size=4)),
       depth=st.sampled_from([None, "zeros", "mm_float", "nan", "negative", "uint16"]), seed=st.integers(0, 5))
def test_localize_invalid_queries(the_map, kind, K, depth, seed):
    rng = np.random.default_rng(seed)
    shape = {"tiny": (2, 3, 3)}.get(kind, (120, 160, 3))
    image = {"noise": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
             "flat": lambda: np.full(shape, 128, np.uint8),
             "tiny": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
             "huge_values": lambda: rng.normal(0, 1e6, shape),
             "wrong_dtype": lambda: rng.integers(0, 256, shape).astype(np.int64),
             "grey": lambda: rng.integers(0, 256, shape[:2], dtype=np.uint8)}[kind]()
    hw = image.shape[:2]
    d = None if depth is None else {
        "zeros": np.zeros(hw, np.float32), "mm_float": np.full(hw, 1500.0, np.float32),
        "nan": np.full(hw, np.nan, np.float32), "negative": -np.ones(hw, np.float32),
        "uint16": rng.integers(0, 65535, hw).astype(np.uint16)}[depth]
    intrinsics = None if K is None else np.array([[K[0], 0, K[2]], [0, K[1], K[3]], [0, 0, 1]])
    with case("localize"), refusal():
        res = the_map.localize(image, depth=d, intrinsics=intrinsics, rng=np.random.default_rng(seed))
        # random pixels and a flat grey are no view of the scene: never a confident pose
        assert not res.probability > 0.5
        assert res.pose is None or np.all(np.isfinite(res.pose))


# ----------------------------------------------------------------------------- CLI boundary values


BOUNDARY = ["-1", "0", "nan", "inf", "0.5"]
#: every numeric option of localize (the pose options are evaluate's too)
LOCALIZE_OPTIONS = ["--hypotheses", "--n-k", "--best-fraction", "--spread-cells", "--refine-rounds", "--threshold-px",
                    "--threshold-m", "--polish-thresholds-m", "--polish-thresholds-px", "--depth-offset-sigma",
                    "--depth-offset-min", "--icp-distances", "--icp-offset-sigma", "--view-rounds", "--min-inliers",
                    "--query-scales", "--depth-gate", "--seed", "--depth-scale"]
#: map's budgets and sizes: only invalid values are run (a valid one trains a map, which test_mapping covers)
MAP_OPTIONS = ["--minutes", "--iterations", "--confidence-minutes", "--buffer-mb", "--calibration-minutes",
               "--checkpoint-minutes", "--batch-size", "--pixel-batch", "--lr", "--n-k", "--head-width",
               "--buffer-copies", "--input-height", "--dsac-hypotheses", "--seed", "--snapshot-minutes"]


def cli_cases() -> list[tuple[str, str, str]]:
    """(command, option, value) for every option above and every boundary value, plus export, synth
    and demo's; the map and demo cases that would train (a valid budget, or 0 = skip) are left out."""
    cases = [("localize", o, v) for o in LOCALIZE_OPTIONS for v in BOUNDARY]
    cases += [("map", o, v) for o in MAP_OPTIONS for v in BOUNDARY
              if v in ("-1", "nan", "inf") or (v == "0" and o not in ("--confidence-minutes", "--calibration-minutes",
                                                                       "--seed"))
              or (v == "0.5" and o in ("--iterations", "--batch-size", "--seed"))]
    cases += [("export", o, v) for o in ("--max-frames", "--min-confidence") for v in BOUNDARY]
    cases += [("synth", o, v) for o in ("--frames", "--width", "--height", "--train-sequences") for v in BOUNDARY]
    cases += [("demo", "--minutes", v) for v in ("-1", "0", "nan", "inf")]
    return cases


@pytest.mark.parametrize("command, option, value", cli_cases())
def test_cli_option_boundaries(tiny_map, overfit_scene, tmp_path, capsys, command, option, value):
    out = tmp_path / "out"
    frame = load_scene(overfit_scene).frames("train")[0]
    argv = {"localize": ["localize", str(tiny_map), "--image", str(frame.image_path)],
            "map": ["map", str(overfit_scene), str(out), "--arch", "fcn"],
            "export": ["export", str(tiny_map), str(overfit_scene), "--out", str(out) + ".ply", "--quiet"],
            "synth": ["synth", str(out), "--frames", "1", "--width", "32", "--height", "24"],
            "demo": ["demo", "--out", str(out)]}[command] + [option, value]
    with case("cli option"):
        try:
            code = main(argv)
        except SystemExit as e:   # argparse: a value of the wrong type, usage and one line on stderr
            code = e.code
        err = capsys.readouterr().err.strip()
        assert code in (0, 2), (argv, err[-800:])
        if code == 2 and "usage:" not in err:
            assert err.startswith("sceneloc: error:") and "\n" not in err, (argv, err)
