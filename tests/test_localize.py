"""Localization end to end: the Map API and the localize CLI on a tiny over-fitted map."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import pose_errors, read_pose_file
from sceneloc.mapping import scene_map as scenemap
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig


@pytest.mark.parametrize("mode", ["rgbd", "rgb"])
def test_map_localize_recovers_training_frame(tiny_map, overfit_scene, mode):
    frame = load_scene(overfit_scene).frames("train")[0]
    image = frame.load_image()
    depth = frame.load_depth() if mode == "rgbd" else None
    res = Map.load(tiny_map).localize(image, depth=depth, rng=np.random.default_rng(0))
    assert res.success, res.failure
    rot, trans = pose_errors(res.pose, frame.pose)
    assert rot < 5 and trans < 0.05, (rot, trans)
    assert set(res.timings) == {"network_ms", "sampling_ms", "refinement_ms", "total_ms"}
    assert res.inliers >= 30 and len(res.used) > 0


def test_pose_estimation_runs_on_one_blas_thread_and_restores_the_setting(tiny_map, overfit_scene, monkeypatch):
    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    seen, real = [], scenemap.estimate_pose

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(scenemap, "estimate_pose", spy)
    before = blas_threads()
    frame = load_scene(overfit_scene).frames("train")[0]
    Map.load(tiny_map).localize(frame.load_image(), depth=frame.load_depth(), rng=np.random.default_rng(0))
    assert len(seen) == 1 and seen[0] and all(n == 1 for n in seen[0])
    assert blas_threads() == before


def test_several_query_scales_keep_the_pass_with_the_highest_inlier_ratio(tiny_map, overfit_scene, monkeypatch):
    passes, real = [], scenemap.estimate_pose

    def spy(pixels, *args, **kwargs):
        res = real(pixels, *args, **kwargs)
        passes.append((len(pixels), res.n_inliers / len(pixels)))
        return res

    monkeypatch.setattr(scenemap, "estimate_pose", spy)
    frame = load_scene(overfit_scene).frames("train")[0]
    the_map = Map.load(tiny_map)
    res = the_map.localize(frame.load_image(), depth=frame.load_depth(), rng=np.random.default_rng(0),
                           estimator=PoseConfig(query_scales=(1.0, 0.5)))
    assert res.success and len(passes) == 2 and passes[0][0] > passes[1][0]  # half the scale, fewer cells
    best = max(passes, key=lambda p: p[1])
    assert len(res.pixels) == best[0] and res.inliers / len(res.pixels) == best[1]
    rot, trans = pose_errors(res.pose, frame.pose)
    assert rot < 5 and trans < 0.05
    with pytest.raises(ValueError, match="query_scales"):
        PoseConfig(query_scales=())


def test_single_image_cli_prints_pose(tiny_map, overfit_scene, capsys):
    frame = load_scene(overfit_scene).frames("train")[1]
    depth = str(frame.depth_path)
    assert main(["localize", str(tiny_map), "--image", str(frame.image_path), "--depth", depth]) == 0
    out = capsys.readouterr().out
    line = out.strip().splitlines()[-1].split()
    assert line[0] == frame.image_path.name and len(line) == 8
    rows = [r for r in out.splitlines() if r.strip().startswith("[")][:4]
    T = np.array([[float(v) for v in r.replace("[", " ").replace("]", " ").split()] for r in rows])
    rot, trans = pose_errors(T, frame.pose)
    assert rot < 5 and trans < 0.05
    assert "query depth reads" in out


def test_single_image_cli_reports_depth_that_reads_long(tiny_map, overfit_scene, tmp_path, capsys):
    """The query's depth map written 5 cm long: the printed offset says so, more so under a wider prior."""
    import cv2
    frame = load_scene(overfit_scene).frames("train")[1]
    raw = cv2.imread(str(frame.depth_path), cv2.IMREAD_UNCHANGED)
    long = tmp_path / "long.depth.png"
    cv2.imwrite(str(long), np.where(raw > 0, raw + 50, 0).astype(np.uint16))

    def printed_offset_cm(depth, *options: str) -> float:
        assert main(["localize", str(tiny_map), "--image", str(frame.image_path), "--depth", str(depth),
                     *options]) == 0
        head = next(r for r in capsys.readouterr().out.splitlines() if "query depth reads" in r)
        return float(head.split("query depth reads ")[1].split(" cm")[0])
    clean, read_long = printed_offset_cm(frame.depth_path), printed_offset_cm(long)
    wide = printed_offset_cm(long, "--icp-offset-sigma", "0.01")
    # the default 3 mm prior holds a small image's offset well below 5 cm; a 1 cm one lets more through
    assert clean < read_long < wide and wide > clean + 0.5


def test_dataset_cli_writes_every_frame_including_failures(tiny_map, overfit_scene, tmp_path, capsys):
    out = tmp_path / "poses.txt"
    assert main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--mode", "rgbd",
                 "--out", str(out)]) == 0
    recs = read_pose_file(out)
    frames = load_scene(overfit_scene).frames("train")
    assert [r.image for r in recs] == [f.name for f in frames]
    assert all({"time_ms", "inliers", "depth_offset_m"} <= set(r.extras) for r in recs)
    assert "query depth reads" in capsys.readouterr().out
    for r, f in zip(recs, frames, strict=True):
        assert r.pose is not None and pose_errors(r.pose, f.pose)[1] < 0.05
    # an impossible inlier requirement: every frame fails, and is still written (as nan)
    assert main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--out", str(out),
                 "--min-inliers", "100000"]) == 2  # exists without --force
    assert "--force" in capsys.readouterr().err
    assert main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--out", str(out),
                 "--min-inliers", "100000", "--force"]) == 0
    recs = read_pose_file(out)
    assert len(recs) == len(frames) and all(r.pose is None for r in recs)


def test_bad_inputs_give_one_line_errors(tiny_map, overfit_scene, tmp_path, capsys):
    import cv2
    frame = load_scene(overfit_scene).frames("train")[0]
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(frame.load_image(), (80, 60)))
    cases = [
        (["localize", str(tiny_map), "--image", str(small)], "pass the query camera's intrinsics"),
        (["localize", str(tiny_map), "--image", str(frame.image_path), "--depth", str(small)], "depth"),
        (["localize", str(tmp_path), "--image", str(frame.image_path)], "not a sceneloc map"),
        (["localize", str(tiny_map), str(overfit_scene), "--split", "val", "--out", str(tmp_path / "p.txt")],
         "unknown split"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_incompatible_map_version_is_refused(tiny_map, tmp_path):
    import json
    import shutil

    from sceneloc.errors import SceneLocError
    old = tmp_path / "old"
    shutil.copytree(tiny_map, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["format_version"] = 0
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SceneLocError, match="format version"):
        Map.load(old)


def test_other_image_size_with_intrinsics_is_rescaled(tiny_map, overfit_scene):
    """A query at half resolution with its own (scaled) intrinsics still localizes."""
    import cv2

    from sceneloc.geometry import scale_intrinsics
    frame = load_scene(overfit_scene).frames("train")[0]
    image = cv2.resize(frame.load_image(), (80, 60), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(frame.load_depth(), (80, 60), interpolation=cv2.INTER_NEAREST)
    res = Map.load(tiny_map).localize(image, depth=depth, intrinsics=scale_intrinsics(frame.K, 0.5),
                                      estimator=PoseConfig(min_inliers=10),
                                      rng=np.random.default_rng(0))
    assert res.success
    rot, trans = pose_errors(res.pose, frame.pose)
    assert rot < 10 and trans < 0.15, (rot, trans)
