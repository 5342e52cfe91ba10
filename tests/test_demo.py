"""`sceneloc demo` end to end on a tiny budget: every artefact, the page's content, few progress
lines on a non-terminal, refusing an earlier run without --force, reusing its scene with it."""

from __future__ import annotations

import json
import re

import pytest

from sceneloc.cli.main import main
from sceneloc.synth.dataset import SensorOptions

TINY = {"frames": 5, "train_sequences": 2, "test_sequences": 1, "width": 128, "height": 96,
        "sensor": SensorOptions.clean()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run: its folder, what it logged and what it wrote to stderr."""
    from sceneloc.demo import run_demo
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    logged: list[str] = []
    capture = pytest.MonkeyPatch()
    import io
    import sys
    err = io.StringIO()                        # not a terminal: plain progress lines
    capture.setattr(sys, "stderr", err)
    try:
        page = run_demo(out, minutes=0.05, confidence_minutes=0.05, synth=TINY, log=logged.append)
    finally:
        capture.undo()
    return out, page, logged, err.getvalue()


def test_demo_writes_every_artefact(demo_run):
    from sceneloc.report.evaluation import REPORT_FILES
    out, page, logged, _ = demo_run
    assert page == out / "index.html" and page.is_file()
    for name in ("data/synth.json", "map/config.json", "demo.json", "results.md"):
        assert (out / name).is_file(), name
    for mode in ("rgb", "rgbd"):
        report = out / f"report_{mode}"
        notes = json.loads((report / "metrics.json").read_text())["notes"]
        for name in REPORT_FILES:
            # the ROC needs inliers and outliers among the predictions: a 3-second map may have none
            if name == "fig3_confidence_roc.png" and any(n.startswith("no ROC") for n in notes):
                continue
            # a tiny demo has too few training frames to hold some out for the pose calibration
            if name == "pose_probability_reliability.png" and any(n.startswith("no reliability") for n in notes):
                continue
            assert (report / name).is_file(), (mode, name)
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["results"]) == {"rgb", "rgbd"}
    assert summary["preset"] == "living" and set(summary["stage_seconds"]) >= {"rendering", "mapping"}
    near = summary["results"]["rgbd"]["near_training"]
    assert 0.0 <= near <= 1.0


def test_demo_prints_table_share_and_report_path(demo_run):
    out, _, logged, _ = demo_run
    tail = "\n".join(logged[-6:])
    assert re.search(r"\| rgb \(PnP\) .*\|\n\| rgbd \(Kabsch\)", tail)
    assert re.search(r"\d+% of the 5 test frames have a training frame within 30 cm / 30 deg", tail)
    assert logged[-1] == f"report: {out / 'index.html'}"


def test_demo_page_shows_trajectory_cdfs_examples_and_every_image_exists(demo_run):
    out, page, _, _ = demo_run
    text = page.read_text()
    for needle in ("Trajectory: estimated against ground truth", "Pose error CDFs",
                   "coordinate error and confidence maps", "Peer comparison", "report_rgb/index.html"):
        assert needle in text, needle
    images = re.findall(r'<img src="([^"]+)"', text)
    assert {"report_rgb/camera_positions_topdown.png", "report_rgbd/pose_error_cdf.png",
            "report_rgbd/fig4_error_confidence_maps.png"} <= set(images)
    for src in images:
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert len(re.findall(r"\d+\.\d deg, \d+\.\d cm|failed", text)) >= 2   # example pose errors


def test_demo_progress_on_a_non_terminal_is_a_few_lines(demo_run):
    _, _, _, err = demo_run
    assert "\r" not in err
    lines = err.splitlines()
    # rendering, scene surface, scene view, caching, mapping, confidence, 2 x localizing: at most 5
    # lines per stage, plus a few lines the mapping logs itself
    assert 0 < len(lines) <= 52, len(lines)


def test_second_run_refused_without_force_then_reuses_the_scene(demo_run, capsys):
    out, _, _, _ = demo_run
    before = (out / "index.html").stat().st_mtime_ns
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a previous demo run" in err[0] and "--force" in err[0]
    assert (out / "index.html").stat().st_mtime_ns == before     # nothing touched
    from sceneloc.demo import run_demo
    logged: list[str] = []
    run_demo(out, minutes=0.02, confidence_minutes=0.02, synth=TINY, force=True, log=logged.append)
    assert any("reusing the rendered 'living' scene" in line for line in logged)
    assert (out / "index.html").stat().st_mtime_ns != before


def test_a_rendering_of_an_older_version_of_the_preset_is_not_reused(demo_run):
    """The scene's fingerprint in synth.json: a rendering whose scene has since changed is rendered again."""
    from sceneloc.demo import DEMO_SYNTH, _is_demo_data
    out, _, _, _ = demo_run
    settings = {**DEMO_SYNTH, **TINY}
    assert _is_demo_data(out / "data", "living", settings)
    meta_file = out / "data" / "synth.json"
    meta = json.loads(meta_file.read_text())
    try:
        meta_file.write_text(json.dumps({**meta, "scene_fingerprint": "0123456789abcdef"}))
        assert not _is_demo_data(out / "data", "living", settings)
        meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "scene_fingerprint"}))
        assert not _is_demo_data(out / "data", "living", settings)
    finally:
        meta_file.write_text(json.dumps(meta))


def test_demo_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing")]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_page_shows_the_peer_comparison_when_it_was_run(demo_run):
    from sceneloc.demo import PEERS_FILE, write_demo_page
    from sceneloc.report.tables import load_metrics
    out = demo_run[0]
    row = {"dataset": "data", "method": "features-sift", "mode": "rgbd", "applicable": True, "within_5cm_5deg": 0.625,
           "median_rot_deg": 1.5, "median_trans_m": 0.042, "loc_ms_median": 80.0}
    skipped = {**row, "method": "posenet", "applicable": False}
    (out / PEERS_FILE).parent.mkdir(exist_ok=True)
    (out / PEERS_FILE).write_text(json.dumps({"rows": [row, skipped]}))
    write_demo_page(out, [load_metrics(out / f"report_{m}") for m in ("rgb", "rgbd")],
                    json.loads((out / "demo.json").read_text()))
    text = (out / "index.html").read_text()
    assert "<td>features-sift</td><td>rgbd</td><td>62.5 %</td><td>1.50</td><td>4.2</td>" in text
    assert "posenet" not in text and "Not run" not in text
