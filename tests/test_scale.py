"""Partitioned maps built on Ray, end to end: a local Ray and a two-node cluster on the loopback address
map a tiny synthetic capture in partitions through the CLI; a query is routed and localized; a capture
that stays one partition maps exactly as a plain map does."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.mapping.build import map_scene
from sceneloc.scale.partition import read_layout
from sceneloc.scale.routing import MapSet, is_map_set
from sceneloc.training.trainers import MappingConfig

ROOT = Path(__file__).resolve().parents[1]
# a tiny xfeat map: seconds per partition on one core
TINY = ["--head-width", "64", "--head-blocks", "1", "--input-height", "128", "--buffer-mb", "4",
        "--buffer-copies", "2", "--iterations", "300", "--no-confidence", "--no-test-eval"]
# routing and resuming need no accurate head
QUICK = [*TINY[:10], "--iterations", "100", "--no-confidence", "--no-test-eval"]


def tiny_config() -> MappingConfig:
    return MappingConfig(head_width=64, head_blocks=1, input_height=128, buffer_mb=4, buffer_copies=2,
                         iterations=300, confidence=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_partitioned_map(scene_root: Path, map_dir: Path, count: int) -> None:
    """The layout covers every training frame; every partition is a map with its routing descriptors."""
    parts, info = read_layout(map_dir)
    assert len(parts) == count and is_map_set(map_dir)
    train = {f.name for f in load_scene(scene_root).frames("train")}
    assert set().union(*(p.frames for p in parts)) == train
    for p in parts:
        assert (map_dir / p.name / "config.json").exists()
        with np.load(map_dir / p.name / "routing.npz") as z:
            assert sorted(z["names"].tolist()) == sorted(p.frames)
            assert z["descriptors"].shape[0] == len(p.frames)


@pytest.mark.slow
def test_partitioned_map_on_local_ray_resumes_and_localizes(tiny_scene, tmp_path, capsys):
    out = tmp_path / "parts"
    assert main(["map", str(tiny_scene), str(out), "--partition-by", "folder", "--ray-workers", "1", *QUICK]) == 0
    check_partitioned_map(tiny_scene, out, 2)
    report = json.loads((out / "scale_report.json").read_text())
    assert sorted(r["name"] for r in report["mapped"]) == ["part-00", "part-01"]
    # a finished map is not overwritten without --force; --resume skips finished partitions
    assert main(["map", str(tiny_scene), str(out), "--partition-by", "folder", *QUICK]) == 2
    assert "not empty" in capsys.readouterr().err
    (out / "part-01" / "mapping_report.json").unlink()   # as if part-01 had not finished
    assert main(["map", str(tiny_scene), str(out), "--partition-by", "folder", "--resume", *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "part-00: finished earlier, skipped" in printed and "part-01: mapped" in printed
    # the mapping frames route to their own partition (seq-01 -> part-00, seq-02 -> part-01)
    maps = MapSet.load(out)
    for f in load_scene(tiny_scene).frames("train"):
        routed, timings = maps.route(f.load_image(), top_k=1)
        assert routed[0][0] == ("part-00" if f.name.startswith("seq-01") else "part-01")
        assert timings["descriptor_ms"] > 0
    poses = tmp_path / "poses.txt"
    assert main(["localize", str(out), str(tiny_scene), "--out", str(poses), "--top-k", "2"]) == 0
    lines = [ln for ln in poses.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == len(load_scene(tiny_scene).frames("test"))


@pytest.mark.slow
def test_one_partition_is_exactly_a_plain_map(tiny_scene, tmp_path):
    torch.manual_seed(0)
    plain = tmp_path / "plain"
    map_scene(tiny_scene, plain, tiny_config(), evaluate_test=False, log=lambda *a: None)
    auto = tmp_path / "auto"
    assert main(["map", str(tiny_scene), str(auto), *TINY]) == 0      # --partitions auto: a room stays one map
    assert not (auto / "partitions.json").exists()
    for name in ("config.json", "scene_cloud.npz", "scene_view.npz"):
        assert (auto / name).read_bytes() == (plain / name).read_bytes()
    a, b = torch.load(auto / "coordinates.pt"), torch.load(plain / "coordinates.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


#: the cluster's address: a loopback one that Ray does not replace by the machine's network address (it does
#: so with 127.0.0.1 and localhost), so that every packet of the test stays on the loopback interface
LOOPBACK = "127.0.0.2"


def ray_node(args: list[str], env: dict, temp: str) -> subprocess.Popen:
    """``ray start --block`` in its own process group (so that the test ends exactly what it started)."""
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", f"--node-ip-address={LOOPBACK}",
           "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp}", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", *args]
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_for_nodes(address: str, count: int, env: dict, timeout_s: float = 60) -> None:
    script = ("import ray, sys; ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False); "
              "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        done = subprocess.run([sys.executable, "-c", script, address, LOOPBACK], env=env, capture_output=True,
                              text=True)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} nodes")


@pytest.mark.slow
def test_two_node_ray_cluster_maps_partitions_and_localizes(tiny_scene, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    # a throwaway cluster on the loopback interface: no token authentication (nodes and driver alike);
    # workers import sceneloc from this checkout
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray")   # a short path (not pytest's tmp_path): Ray's sockets live under it
    nodes = [ray_node(["--head", f"--port={port}", "--include-dashboard=false",
                       f"--ray-client-server-port={free_port()}"], env, temp)]
    try:
        time.sleep(3)
        nodes.append(ray_node([f"--address={address}"], env, temp))
        wait_for_nodes(address, 2, env)
        out = tmp_path / "cluster_map"
        assert main(["map", str(tiny_scene), str(out), "--partitions", "2", "--ray-address", address, *TINY]) == 0
        check_partitioned_map(tiny_scene, out, 2)
        report = json.loads((out / "scale_report.json").read_text())
        assert report["workers"] is None and len(report["mapped"]) == 2
        query = load_scene(tiny_scene).frames("train")[3]
        routed = MapSet.load(out).localize(query.load_image(), query.load_depth(), query.K, "ransac",
                                           np.random.default_rng(0), top_k=2)
        assert routed.result.pose is not None and routed.name in ("part-00", "part-01")
        assert np.linalg.norm(routed.result.pose[:3, 3] - query.pose[:3, 3]) < 0.1   # a mapping view, RGB-D
    finally:
        for node in reversed(nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
