"""Routing without Ray: the VLAD codebook and descriptors, a tiny partitioned map made partition by
partition in this process, ``localize`` and ``evaluate`` over it, and the input checks of a map set."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import read_pose_file
from sceneloc.scale.partition import write_layout
from sceneloc.scale.ray_mapping import (
    map_partition,
    map_partitioned,
    plan_partitions,
    routing_codebook,
    write_partition_routing,
)
from sceneloc.scale.routing import ROUTING_FILE, MapSet, fit_codebook, read_routing, vlad
from sceneloc.training.trainers import MappingConfig


class _Image:
    """A stand-in for ``data.dataset.Frame``: its ``load_image`` is its index (the fake encoder's input)."""

    def __init__(self, i: int):
        self.i = i

    def load_image(self) -> int:
        return self.i


class _ClusteredFeatures:
    """A stand-in encoder whose per-pixel features of every image lie near three known directions."""

    def __init__(self, directions: np.ndarray):
        self.directions = directions

    def local_features(self, i: int) -> np.ndarray:
        rng = np.random.default_rng(i)
        f = self.directions[rng.integers(3, size=300)] + 0.05 * rng.standard_normal((300, 8))
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def test_codebook_finds_the_clusters_and_is_reproducible():
    directions = np.eye(8)[[0, 3, 6]]
    frames = [_Image(i) for i in range(10)]
    words = fit_codebook(frames, _ClusteredFeatures(directions), words=3, samples=2000)
    assert words.shape == (3, 8)
    assert np.allclose(np.linalg.norm(words, axis=1), 1, atol=1e-5)
    # every true direction has a word within a few degrees of it
    assert (words @ directions.T).max(axis=0).min() > 0.99
    again = fit_codebook(frames, _ClusteredFeatures(directions), words=3, samples=2000)
    assert np.array_equal(words, again)


def test_vlad_sums_residuals_per_word():
    words = np.eye(4, dtype=np.float32)[:2]                                   # two words in 4-D
    f = np.array([[0.8, 0.6, 0, 0], [0.8, 0, 0.6, 0], [0, 1, 0, 0]], dtype=np.float32)
    d = vlad(f, words).reshape(2, 4)
    # word 0 gets the residuals of the first two features: (-0.4, 0.6, 0.6, 0), signed square root, unit
    expected0 = np.sign([-0.4, 0.6, 0.6, 0]) * np.sqrt(np.abs([-0.4, 0.6, 0.6, 0]))
    expected0 /= np.linalg.norm(expected0)
    assert np.allclose(d[0], expected0, atol=1e-6)
    assert np.allclose(d[1], 0)            # the third feature is word 1 itself: no residual
    assert np.linalg.norm(d) == pytest.approx(1, abs=1e-6)


def tiny_config() -> MappingConfig:
    return MappingConfig(head_width=64, head_blocks=1, input_height=128, buffer_mb=4, buffer_copies=2,
                         iterations=300, confidence=False)


@pytest.fixture(scope="module")
def tiny_parts(tiny_scene, tmp_path_factory) -> Path:
    """A partitioned map of ``tiny_scene`` (one partition per sequence), each partition mapped here by
    the Ray task's body, without Ray."""
    out = tmp_path_factory.mktemp("tiny_parts") / "parts"
    out.mkdir()
    parts = plan_partitions(tiny_scene, None, "folder", 0.5)
    write_layout(out, parts, {"dataset": str(tiny_scene)})
    codebook = routing_codebook(tiny_scene, out, resume=False, log=lambda *a: None)
    for p in parts:
        map_partition(str(tiny_scene), str(out / p.name), tiny_config(), p.frames, 1, codebook)
    return out


@pytest.mark.slow
def test_mapping_frames_route_to_their_partition(tiny_scene, tiny_parts):
    maps = MapSet.load(tiny_parts)
    assert sorted(maps.maps) == ["part-00", "part-01"]
    for f in load_scene(tiny_scene).frames("train"):
        routed, _ = maps.route(f.load_image(), top_k=2)
        assert routed[0][0] == ("part-00" if f.name.startswith("seq-01") else "part-01")
        assert routed[0][1] > routed[1][1]


@pytest.mark.slow
def test_map_set_localize_honours_depth_scale(tiny_scene, tiny_parts, tmp_path, capsys):
    frame = load_scene(tiny_scene).frames("train")[2]
    raw = cv2.imread(str(frame.depth_path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and int(raw[raw < 65535].max()) * 5 < 65535
    scaled = tmp_path / "depth_x5.png"
    cv2.imwrite(str(scaled), np.where((raw == 0) | (raw == 65535), raw, raw * 5).astype(np.uint16))

    def pose(*extra: str) -> np.ndarray | None:
        code = main(["localize", str(tiny_parts), "--image", str(frame.image_path), *extra])
        printed = capsys.readouterr()
        if code != 0:
            return None
        rows = [ln for ln in printed.out.splitlines() if ln.strip().startswith("[")]
        return np.array([[float(v) for v in r.replace("[", " ").replace("]", " ").split()] for r in rows[:4]])

    reference = pose("--depth", str(frame.depth_path))                       # millimetres: the default scale
    assert reference is not None and np.linalg.norm(reference[:3, 3] - frame.pose[:3, 3]) < 0.1
    honoured = pose("--depth", str(scaled), "--depth-scale", "0.0002")          # units of 0.2 mm
    assert honoured is not None and np.linalg.norm(honoured[:3, 3] - reference[:3, 3]) < 0.01
    ignored = pose("--depth", str(scaled))                                    # read as mm: 5x too far
    assert ignored is None or np.linalg.norm(ignored[:3, 3] - frame.pose[:3, 3]) > 0.1


@pytest.mark.slow
def test_evaluate_on_a_partitioned_map_is_the_routed_localization(tiny_scene, tiny_parts, tmp_path, capsys):
    poses = tmp_path / "poses.txt"
    assert main(["localize", str(tiny_parts), str(tiny_scene), "--mode", "rgbd", "--split", "train",
                 "--out", str(poses)]) == 0
    report = tmp_path / "report"
    assert main(["evaluate", str(tiny_parts), str(tiny_scene), "--mode", "rgbd", "--split", "train",
                 "--out", str(report), "--quiet"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    frames = load_scene(tiny_scene).frames("train")
    assert metrics["frames"] == len(frames) and metrics["map"] == str(tiny_parts)
    assert "routed to the top 2 of 2 maps" in metrics["pose_source"]
    assert (report / "index.html").exists() and (report / "report.md").exists()
    timing = metrics["timing_ms"]   # the routing and all routed maps' localizations, besides the winner's
    assert 0 < timing["routing"]["median"] and timing["total"]["median"] <= timing["routed total"]["median"]
    # the report's poses are those of `localize` on the map set: same routing, same seeds
    by_cli = {r.image: r for r in read_pose_file(poses)}
    in_report = read_pose_file(report / "poses.txt")
    assert len(in_report) == len(frames)
    for r in in_report:
        assert (r.pose is None) == (by_cli[r.image].pose is None)
        if r.pose is not None:
            assert np.allclose(r.pose, by_cli[r.image].pose, atol=1e-6)
            assert r.extras["map_index"] == (0.0 if r.image.startswith("seq-01") else 1.0)
    # mapping views in RGB-D: the routed partitions place them
    assert metrics["median_translation_m"] < 0.05
    # and scoring the pose file through the map set gives the same accuracy
    scored = tmp_path / "scored"
    assert main(["evaluate", str(tiny_parts), str(tiny_scene), "--mode", "rgbd", "--split", "train",
                 "--poses", str(poses), "--out", str(scored), "--quiet"]) == 0
    assert json.loads((scored / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]


@pytest.mark.slow
def test_routing_files_of_different_codebooks_are_refused(tiny_scene, tiny_parts, tmp_path):
    other = tmp_path / "mixed"
    other.mkdir()
    for name in ("part-00", "part-01"):
        (other / name).symlink_to(tiny_parts / name, target_is_directory=True)
    assert MapSet.load(other).encoder is not None      # a folder of the two partitions routes as the map did
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in (tiny_parts / "part-01").iterdir():
        (copy / f.name).symlink_to(f)
    (copy / ROUTING_FILE).unlink()
    descriptors, codebook = read_routing(tiny_parts / "part-01")
    frames = [f.name for f in load_scene(tiny_scene).frames("train") if f.name.startswith("seq-02")]
    write_partition_routing(tiny_scene, copy, frames, codebook[::-1].copy())   # the same words, other order
    (other / "part-01").unlink()
    (other / "part-01").symlink_to(copy, target_is_directory=True)
    with pytest.raises(SceneLocError, match="another routing codebook"):
        MapSet.load(other)


def _fake_map_set(root: Path) -> Path:
    """A folder that is a map set by its layout (nothing in it loads): the checks must come first."""
    for name in ("a", "b"):
        (root / "set" / name).mkdir(parents=True)
        (root / "set" / name / "config.json").write_text("{}")
    return root / "set"


@pytest.mark.parametrize("args, message", [
    (["DATA", "--image", "q.png"], "give one source of images"),
    (["DATA"], "--out POSES.txt is required"),
    (["DATA", "--out", "EXISTS"], "exists (use --force"),
    (["--image", "q.png", "--depth", "d.png", "--depth-scale", "0"], "--depth-scale 0: must be greater than 0"),
    (["DATA", "--depth", "d.png", "--out", "p.txt"], "--depth goes with --image"),
    (["--images", "DIR", "--out", "p.txt"], "--images: not available on a map set"),
    (["DATA", "--out", "p.txt", "--sequence"], "--sequence: not available on a map set"),
    (["DATA", "--out", "p.txt", "--top-k", "0"], "--top-k 0: need at least 1"),
])
def test_map_set_localize_checks_its_inputs(tmp_path, tiny_scene, capsys, args, message):
    maps = _fake_map_set(tmp_path)
    (tmp_path / "EXISTS").write_text("mine\n")
    (tmp_path / "DIR").mkdir()
    subst = {"DATA": str(tiny_scene), "EXISTS": str(tmp_path / "EXISTS"), "DIR": str(tmp_path / "DIR"),
             "p.txt": str(tmp_path / "p.txt")}
    assert main(["localize", str(maps), *[subst.get(a, a) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sceneloc: error:") and message in err[0]
    assert (tmp_path / "EXISTS").read_text() == "mine\n" and not (tmp_path / "p.txt").exists()


@pytest.mark.slow
def test_resume_refreshes_routing_of_an_earlier_format_without_remapping(tiny_scene, tiny_parts, tmp_path):
    out = tmp_path / "parts"
    shutil.copytree(tiny_parts, out)
    descriptors, codebook = read_routing(tiny_parts / "part-00")
    names = np.load(tiny_parts / "part-00" / ROUTING_FILE)["names"]
    np.savez_compressed(out / "part-00" / ROUTING_FILE, names=names, descriptors=np.zeros((len(names), 1536)))
    with pytest.raises(SceneLocError, match="earlier sceneloc"):
        MapSet.load(out)
    weights = (out / "part-00" / "coordinates.pt").read_bytes()
    lines: list[str] = []
    parts = plan_partitions(tiny_scene, None, "folder", 0.5)
    report = map_partitioned(tiny_scene, out, tiny_config(), parts, resume=True, log=lines.append)
    assert "part-00: routing descriptors refreshed" in lines and "part-01: routing descriptors refreshed" not in lines
    assert report["mapped"] == [] and not any("on Ray" in ln for ln in lines)      # nothing mapped, no Ray started
    refreshed, same_words = read_routing(out / "part-00")
    assert np.array_equal(same_words, codebook) and np.allclose(refreshed, descriptors, atol=1e-3)
    assert (out / "part-00" / "coordinates.pt").read_bytes() == weights
    assert MapSet.load(out).encoder is not None
