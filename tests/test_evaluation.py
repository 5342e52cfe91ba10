"""`sceneloc evaluate / export / table` (issue 6): metrics checked against an independent
recomputation, hand-made pose files with known errors, report files, PLY round trip, bad input.

Two maps, built once per session: a tiny *trained* map (mapping machinery end to end, poor
accuracy) and an *oracle* map whose coordinate "network" looks up the ground truth of each test
image, with a known band of pixels shifted by 1 m -- so poses, inlier shares and the ROC are
deterministic whatever the training would give.
"""

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneloc.cli.main import main
from sceneloc.errors import SceneLocError

FRAMES, W, H = 4, 128, 96
OUTLIER_COLUMNS = W // 4          # the oracle shifts pixels left of this column by 1 m


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from sceneloc.synth.dataset import SensorOptions, generate
    root = tmp_path_factory.mktemp("eval") / "data"
    generate(root, frames=FRAMES, train_sequences=1, test_sequences=1, width=W, height=H,
             sensor=SensorOptions.clean(), progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_map(tiny_data) -> Path:
    from sceneloc.mapping.build import map_scene
    from sceneloc.training.trainers import MappingConfig
    out = tiny_data.parent / "map"
    cfg = MappingConfig(width=8, input_height=48, iterations=20, batch_size=4, confidence_minutes=0.01,
                        confidence_mode="both", n_k=200)
    map_scene(tiny_data, out, cfg, device="cpu", evaluate_test=False, log=lambda s: None)
    return out


class LookupCoordinates(torch.nn.Module):
    """Test double of a coordinate network: the stored output of each known input image."""
    stride, multiple = 1, 16

    def __init__(self):
        super().__init__()
        self.table = {}

    @staticmethod
    def key(x: torch.Tensor) -> bytes:
        return x[0, :, ::5, ::7].numpy().tobytes()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[self.key(x)].clone()


@pytest.fixture(scope="session")
def oracle_map(tiny_data):
    from sceneloc.data.dataset import load_scene, scene_coordinates_at
    from sceneloc.mapping.scene_map import Map
    from sceneloc.nets.models import ConfidencePointNet, image_to_tensor
    net = LookupCoordinates()
    frames = load_scene(tiny_data).frames("test")
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)  # input = image size: one output per pixel centre
    for f in frames:
        image = f.load_image()
        X, _ = scene_coordinates_at(f.load_depth(), f.pose, f.K, np.stack([u, v], -1))
        X[:, :OUTLIER_COLUMNS, 0] += 1.0
        net.table[LookupCoordinates.key(image_to_tensor(image, (H, W)))] = torch.from_numpy(X).permute(2, 0, 1)[None]
    torch.manual_seed(0)
    config = {"format_version": 1, "network": {"arch": "lookup"}, "input_height": H, "image_size": [H, W],
              "intrinsics": frames[0].K.tolist(), "normalisation": {"center": [0.0, 0.0, 0.0], "scale": 1.0},
              "confidence_network": {"mode": "regression"}, "confidence": {"n_k": 500, "scale": 2.8768}}
    return Map(config, net, ConfidencePointNet(), "cpu", classifier=ConfidencePointNet(mode="classification"))


# -------------------------------------------------- independent recomputation (first principles)


def quat_to_matrix(w, x, y, z):
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R):
    """Shepperd's method: the largest of 4w^2, 4x^2, 4y^2, 4z^2 decides the division."""
    t = np.trace(R)
    cands = [t, R[0, 0] - R[1, 1] - R[2, 2], R[1, 1] - R[0, 0] - R[2, 2], R[2, 2] - R[0, 0] - R[1, 1]]
    k = int(np.argmax(cands))
    s = math.sqrt(1 + cands[k]) * 2
    if k == 0:
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif k == 1:
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif k == 2:
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    return q


def gt_poses(data: Path) -> dict[str, np.ndarray]:
    """Camera-to-world 4x4 of every test frame, straight from the 7-Scenes files."""
    seqs = re.findall(r"sequence(\d+)", (data / "TestSplit.txt").read_text())
    out = {}
    for s in seqs:
        for p in sorted((data / f"seq-{int(s):02d}").glob("frame-*.pose.txt")):
            out[f"seq-{int(s):02d}/{p.name.replace('.pose.txt', '.color.png')}"] = np.loadtxt(p)
    return out


def recompute(pose_file: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (deg) and camera-centre (m) errors per test frame; inf for a nan (failed) line."""
    gt = gt_poses(data)
    rot, trans = [], []
    for line in pose_file.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, *vals = line.split()
        q, t = [float(v) for v in vals[:4]], np.array([float(v) for v in vals[4:7]])
        if not all(map(math.isfinite, q)):
            rot.append(math.inf)
            trans.append(math.inf)
            continue
        R_cw = quat_to_matrix(*q)                      # the file holds world-to-camera
        centre = -R_cw.T @ t                           # camera centre in the world
        R_gt, c_gt = gt[name][:3, :3], gt[name][:3, 3]
        R_est = R_cw.T                                 # camera-to-world rotation
        cos = (np.trace(R_est.T @ R_gt) - 1) / 2       # angle of R_est^T R_gt
        rot.append(math.degrees(math.acos(min(1.0, max(-1.0, cos)))))
        trans.append(float(np.linalg.norm(centre - c_gt)))
    assert len(rot) == len(gt)
    return np.array(rot), np.array(trans)


def as_float(x):
    return math.inf if x is None else x


# -------------------------------------------------------------------------------------- tests


def test_evaluate_cli_matches_independent_recomputation(tiny_map, tiny_data, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(tiny_map), str(tiny_data), "--out", str(out), "--hypotheses", "16", "--quiet"]) == 0
    assert "report:" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    rot, trans = recompute(out / "poses.txt", tiny_data)
    assert m["frames"] == FRAMES and m["split"] == "test" and m["mode"] == "rgb"
    assert m["failures"] == int(np.sum(np.isinf(rot)))
    assert as_float(m["median_rotation_deg"]) == pytest.approx(np.median(rot), abs=1e-3)
    assert as_float(m["median_translation_m"]) == pytest.approx(np.median(trans), abs=1e-5)
    for deg, cm in ((5, 5), (10, 10), (2, 2), (1, 1)):
        assert m["accuracy"][f"{cm}cm_{deg}deg"] == np.mean((rot < deg) & (trans < cm / 100))
    for stage in ("network", "sampling", "refinement", "total"):
        assert m["timing_ms"][stage]["median"] <= m["timing_ms"][stage]["p95"]
    assert 0.0 <= m["inlier_share"]["all_predictions"] <= 1.0


def _line(name: str, T_wc) -> str:
    if T_wc is None:
        return f"{name} " + " ".join(["nan"] * 7)
    R_cw = T_wc[:3, :3].T
    t_cw = -R_cw @ T_wc[:3, 3]
    return " ".join([name, *(f"{v:.12f}" for v in (*matrix_to_quat(R_cw), *t_cw))])


def test_handmade_pose_file_known_errors(oracle_map, tiny_data, tmp_path):
    from sceneloc.report.evaluation import evaluate
    gt = gt_poses(tiny_data)
    names = sorted(gt)
    a = math.radians(3.0)
    Rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    moved = gt[names[2]].copy()
    moved[:3, :3] = moved[:3, :3] @ Rx                 # 3 degrees about the camera's x axis
    moved[:3, 3] += np.array([0.0, 0.0, 0.04])         # camera centre 4 cm up
    lines = ["# hand-made", _line(names[0], gt[names[0]]),
             _line(Path(names[1]).name, gt[names[1]]),  # a bare file name matches when unique
             _line(names[2], moved), _line(names[3], None)]
    pose_file = tmp_path / "poses.txt"
    pose_file.write_text("\n".join(lines) + "\n")
    m = evaluate(oracle_map, tiny_data, tmp_path / "r", poses=pose_file, progress=False)
    # errors: rotation [0, 0, 3, inf] deg, translation [0, 0, 4, inf] cm
    assert m["frames"] == 4 and m["failures"] == 1
    assert m["median_rotation_deg"] == pytest.approx(1.5, abs=1e-5)
    assert m["median_translation_m"] == pytest.approx(0.02, abs=1e-7)
    assert m["accuracy"] == {"5cm_5deg": 0.75, "10cm_10deg": 0.75, "2cm_2deg": 0.5, "1cm_1deg": 0.5}
    assert m["inlier_share"]["used_for_pose"] is None and m["timing_ms"]["total"] is None
    # the report's pose file is the same poses again, the failure included
    rot, trans = recompute(tmp_path / "r" / "poses.txt", tiny_data)
    assert np.isinf(rot).sum() == 1 and np.nanmax(rot[np.isfinite(rot)]) == pytest.approx(3.0, abs=1e-5)
    # a file that leaves frames out is refused, naming its coverage; with allow_missing they are failures
    pose_file.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(SceneLocError, match="lists 2 of the 4 frames .* --allow-missing"):
        evaluate(oracle_map, tiny_data, tmp_path / "r2", poses=pose_file, progress=False)
    m = evaluate(oracle_map, tiny_data, tmp_path / "r2", poses=pose_file, progress=False, allow_missing=True)
    assert m["pose_coverage"] == {"listed": 2, "frames": 4, "share": 0.5}
    assert m["failures"] == 2 and m["accuracy"]["5cm_5deg"] == 0.5
    assert any("2 frames of the split are not in" in n for n in m["notes"])
    # re-evaluating a report's own pose file into that report (--force) reads it before replacing it
    again = evaluate(oracle_map, tiny_data, tmp_path / "r", poses=tmp_path / "r" / "poses.txt", force=True,
                     progress=False)
    assert again["failures"] == 1 and again["accuracy"]["5cm_5deg"] == 0.75
    assert (tmp_path / "r" / "poses.txt").is_file()


def test_report_files_and_oracle_accuracy(oracle_map, tiny_data, tmp_path):
    from sceneloc.data.dataset import load_scene
    from sceneloc.pose.calibration import PoseCalibration
    from sceneloc.pose.config import PoseConfig, inlier_settings
    from sceneloc.report.evaluation import PLOT_FILES, REPORT_FILES, evaluate
    out = tmp_path / "report"
    # a calibration that puts every pose of this map at p > 0.5: more inliers, more often right
    rng = np.random.default_rng(0)
    inliers = rng.integers(0, 4 * H * W // 10, 200)
    K = load_scene(tiny_data).frames("test")[0].K
    estimator = PoseConfig(method="ransac")
    oracle_map.calibration = PoseCalibration.fit({"rgbd": (inliers, np.full(200, H * W),
                                                           np.where(inliers > H * W // 10, 0.5, np.inf))},
                                                 inlier_settings(oracle_map.estimator_for(estimator, K), K))
    try:
        m = evaluate(oracle_map, tiny_data, out, mode="rgbd", estimator=estimator, progress=False)
    finally:
        oracle_map.calibration = None
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    html_text = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(PLOT_FILES.values())
    for png in pngs:
        assert f'src="{png}"' in html_text and f"]({png})" in md
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # exact coordinates except a 1 m shifted quarter of the image: perfect poses, ~75% inliers
    assert m["failures"] == 0 and m["accuracy"]["1cm_1deg"] == 1.0
    assert m["inlier_share"]["all_predictions"] == pytest.approx(1 - OUTLIER_COLUMNS / W, abs=0.03)
    assert m["inlier_share"]["used_for_pose"] == 1.0   # RANSAC keeps only the exact points
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"] and len(saved["plots"]) == len(PLOT_FILES)
    assert set(saved["roc_auc"]) == {"regression (confidence network)", "classification (inlier classifier)"}
    near = saved["near_training"]
    assert near["max_m"] == 0.3 and near["max_deg"] == 30 and 0.0 <= near["share"] <= 1.0
    assert "training frame within 30 cm / 30 deg" in html_text
    # every pose is right and predicted p > 0.5: all kept, none wrong to reject
    op = saved["calibration"]["operating_point"]
    assert op["right_kept"] == 1.0 and op["wrong_rejected"] is None and op["kept"] == 1.0
    assert sum(b["frames"] for b in saved["calibration"]["bins"]) == m["frames"]
    assert "rejecting poses with probability &lt; 0.5" in html_text
    assert "| rejecting poses with probability < 0.5 |" in md


def test_near_training_share_on_a_handmade_case():
    from sceneloc.geometry import make_pose
    from sceneloc.report.evaluation import near_training_share, nearest_training_distances

    def rot_z(deg: float) -> np.ndarray:
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])

    train = np.stack([make_pose(np.eye(3), [0, 0, 0]), make_pose(rot_z(90), [2, 0, 0])])
    test = np.stack([
        make_pose(rot_z(10), [0.2, 0, 0]),     # 20 cm, 10 deg from training frame 0: near
        make_pose(rot_z(45), [0.1, 0, 0]),     # 10 cm from frame 0 but 45 deg turned: not near
        make_pose(rot_z(80), [1.75, 0, 0]),    # 25 cm, 10 deg from frame 1: near
        make_pose(np.eye(3), [1.0, 0, 0]),     # 1 m from frame 0 (same view), 1 m from frame 1
        make_pose(rot_z(90), [2.0, 0.35, 0]),  # 35 cm behind the 30 cm limit
    ])
    d = nearest_training_distances(train, test)
    np.testing.assert_allclose(d, [0.2, np.inf, 0.25, 1.0, 0.35], atol=1e-9)
    assert near_training_share(train, test) == pytest.approx(2 / 5)
    assert near_training_share(train, test, max_m=0.4) == pytest.approx(3 / 5)
    assert near_training_share(train, test, max_deg=50) == pytest.approx(3 / 5)   # the 45 deg view joins


def test_roc_curve():
    from sceneloc.report.diagnostics import roc_curve
    labels = np.array([1, 1, 0, 0], bool)
    assert roc_curve(np.array([0.9, 0.8, 0.2, 0.1]), labels)[2] == 1.0
    assert roc_curve(np.array([0.1, 0.2, 0.8, 0.9]), labels)[2] == 0.0
    assert roc_curve(np.full(4, 0.5), labels)[2] == 0.5       # ties are one step, not a lucky order
    fpr, tpr, auc = roc_curve(np.array([0.9, 0.7, 0.8, 0.1]), labels)
    assert auc == 0.75 and fpr[-1] == tpr[-1] == 1.0


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a binary little-endian x y z float / red green blue uchar PLY by hand."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    n = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    props = [h.split()[1:] for h in header if h.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"],
                     ["uchar", "red"], ["uchar", "green"], ["uchar", "blue"]]
    body = raw[end:]
    assert len(body) == n * 15
    rows = [struct.unpack_from("<fffBBB", body, 15 * i) for i in range(n)]
    arr = np.array(rows, dtype=np.float64).reshape(n, 6)
    return arr[:, :3], arr[:, 3:].astype(np.uint8)


def test_ply_round_trip(tmp_path):
    from sceneloc.report.export import write_ply
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(57, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(57, 3), dtype=np.uint8)
    write_ply(tmp_path / "p.ply", xyz, rgb)
    xyz2, rgb2 = read_ply(tmp_path / "p.ply")
    assert np.array_equal(xyz2.astype(np.float32), xyz) and np.array_equal(rgb2, rgb)


def test_export_cli(tiny_map, tiny_data, tmp_path):
    from sceneloc.data.dataset import load_scene
    from sceneloc.mapping.scene_map import Map
    ply = tmp_path / "map.ply"
    assert main(["export", str(tiny_map), str(tiny_data), "--out", str(ply), "--max-frames", "2",
                 "--min-confidence", "0.01", "--quiet"]) == 0
    xyz, rgb = read_ply(ply)
    # the same points again: predictions of the first and last training frame above the threshold
    the_map = Map.load(tiny_map, device="cpu")
    frames = load_scene(tiny_data).frames("train")
    exp_xyz, exp_rgb = [], []
    for f in (frames[0], frames[-1]):
        image = f.load_image()
        pred = the_map.predict(image)
        keep = pred.confidence > 0.01
        exp_xyz.append(pred.coords[keep])
        uv = np.rint(pred.pixels[keep]).astype(int)
        exp_rgb.append(image[uv[:, 1], uv[:, 0]])
    assert np.allclose(xyz, np.concatenate(exp_xyz), atol=1e-6)
    assert np.array_equal(rgb, np.concatenate(exp_rgb))
    assert main(["export", str(tiny_map), str(tiny_data), "--out", str(ply)]) == 2  # exists, no --force


def _metrics(scene, rot, trans, acc5):
    return {"scene": scene, "mode": "rgbd", "solver": "Kabsch", "median_rotation_deg": rot,
            "median_translation_m": trans, "accuracy": {"5cm_5deg": acc5}}


def test_table_averages(tmp_path, capsys):
    for name, (rot, trans, acc) in {"chess": (1.0, 0.03, 0.8), "fire": (3.0, 0.05, 0.4)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(_metrics(name, rot, trans, acc)))
    out = tmp_path / "table.md"
    assert main(["table", str(tmp_path / "chess"), str(tmp_path / "fire"), "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()]
    assert rows[0][:2] == ["scene", "mode"]
    assert rows[2][0] == "chess" and rows[3][0] == "fire"
    assert rows[-1] == ["average", "", "2.00", "4.0", "60.0"]
    # an infinite median (null) makes the average infinite, not smaller
    (tmp_path / "fire" / "metrics.json").write_text(json.dumps(_metrics("fire", None, None, 0.0)))
    from sceneloc.report.tables import table
    assert table([tmp_path / "chess", tmp_path / "fire"]).splitlines()[-1].split("|")[3].strip() == "inf"


def test_bad_inputs(oracle_map, tiny_map, tiny_data, tmp_path, capsys):
    from sceneloc.report.evaluation import evaluate
    from sceneloc.report.tables import table
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert main(["evaluate", str(tiny_map), str(tiny_data), "--out", str(busy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--force" in err
    assert (busy / "keep.txt").exists()
    bad = tmp_path / "bad.txt"
    bad.write_text("seq-01/frame-000000.color.png 1 0 0 0 0 0 0\n")   # a training frame
    with pytest.raises(SceneLocError, match="not in the evaluated split"):
        evaluate(oracle_map, tiny_data, tmp_path / "r1", poses=bad, progress=False)
    assert not (tmp_path / "r1").exists()
    with pytest.raises(SceneLocError, match="missing"):
        table([tmp_path])
