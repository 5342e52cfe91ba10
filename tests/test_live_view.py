"""The rerun live view (service/live_view.py): a one-line error without rerun-sdk, and a recording with the
map, the queries and both trajectories when it is installed (written to a file, no viewer)."""

from __future__ import annotations

import importlib

import pytest
from fastapi.testclient import TestClient

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.mapping.scene_map import Map
from sceneloc.service import live_view as live_view
from sceneloc.service.server import LocalizationService, create_app


def test_missing_rerun_is_a_one_line_error(monkeypatch, tiny_map, overfit_scene, tmp_path, capsys):
    real = importlib.import_module

    def no_rerun(name, *args):
        if name == "rerun":
            raise ImportError("No module named 'rerun'")
        return real(name, *args)

    monkeypatch.setattr(live_view.importlib, "import_module", no_rerun)
    with pytest.raises(SceneLocError, match=r"pip install 'sceneloc\[viewer\]'"):
        live_view.LiveView.start(Map.load(tiny_map, device="cpu"), str(tmp_path / "x.rrd"))
    code = main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--out", str(tmp_path / "p.txt"),
                 "--rerun", str(tmp_path / "x.rrd")])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1


def test_map_points_prefer_the_grey_view_and_are_thinned(tiny_map):
    the_map = Map.load(tiny_map, device="cpu")
    points, grey = live_view.map_points(the_map, max_points=100)
    assert grey is not None and len(points) == len(grey) <= 100 and points.shape[1] == 3
    the_map.view = None
    points, grey = live_view.map_points(the_map)
    assert grey is None and len(points) == len(the_map.cloud.points)


def test_localize_sequence_logs_a_rerun_recording(tiny_map, overfit_scene, tmp_path):
    pytest.importorskip("rerun", reason="rerun-sdk (the [viewer] extra) is not installed")
    rrd, poses = tmp_path / "live.rrd", tmp_path / "poses.txt"
    code = main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--mode", "rgbd",
                 "--sequence", "--out", str(poses), "--rerun", str(rrd)])
    assert code == 0
    frames = load_scene(overfit_scene).frames("train")
    assert len([ln for ln in poses.read_text().splitlines() if not ln.startswith("#")]) == len(frames)
    data = rrd.read_bytes()
    assert len(data) > 10_000   # the map's points and two images, at least
    for entity in (b"world/map", b"world/camera/image", b"world/estimated", b"world/true"):
        assert entity in data, entity


def test_serve_logs_each_query_to_the_live_view(tiny_map, overfit_scene, tmp_path):
    pytest.importorskip("rerun", reason="rerun-sdk (the [viewer] extra) is not installed")
    the_map = Map.load(tiny_map, device="cpu")
    rrd = tmp_path / "serve.rrd"
    live = live_view.LiveView.start(the_map, str(rrd))
    service = LocalizationService({"tiny": the_map}, on_result=live.on_result)
    frame = load_scene(overfit_scene).frames("train")[0]
    with TestClient(create_app(service, None)) as c:
        for _ in range(2):
            assert c.post("/v1/localize", files={"image": frame.image_path.read_bytes()}).status_code == 200
    live.close()
    assert live.frame == 2 and len(live.estimated) == 2
    data = rrd.read_bytes()
    assert b"world/camera/image" in data and b"world/estimated" in data
