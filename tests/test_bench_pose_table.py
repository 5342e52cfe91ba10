"""The Table I harness (benchmarks/bench_pose_table.py) runs end to end on a tiny map and writes its section."""

import sys

import bench_pose_table


def test_table_one_runs_every_estimator_and_replaces_its_section(tiny_map, overfit_scene, tmp_path, monkeypatch):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# sceneloc benchmarks\n\n## Pose estimation: paper Table I and the full estimator\n\n"
                  "old\n\n## Other\n\nkept\n")
    out = tmp_path / "table.json"
    monkeypatch.setattr(sys, "argv", ["bench_pose_table.py", "--data", str(overfit_scene), "--maps",
                                      f"l1={tiny_map}", f"confidence={tiny_map}", "--full", "l1",
                                      "--write", str(md), "--json", str(out)])
    bench_pose_table.main()
    text = md.read_text()
    assert "old" not in text and text.endswith("## Other\n\nkept\n")    # replaced, the next section kept
    table = text[text.index("| | P_1 |"):]
    kabsch = next(line for line in table.splitlines() if line.startswith("| Kabsch |")).split("|")[2:-1]
    assert len(kabsch) == len(bench_pose_table.ROWS)
    # l1 and confidence name the same map: its random and confidence cells are filled, tukey/smooth are not
    filled = [cell.strip() != "n/a" for cell in kabsch]
    assert filled == [m in ("l1", "confidence") for _, m, _ in bench_pose_table.ROWS]
    for est in ("full-confidence-spread", "ransac", "table1-random500"):
        assert f"| {est} |" in text or est.startswith("table1")
    assert "spread" in out.read_text()
