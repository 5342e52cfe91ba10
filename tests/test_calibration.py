"""Per-pose probability calibration: logistic fit, file round trip, reliability and operating point."""

import json
import math

import numpy as np
import pytest

from sceneloc import geometry as g
from sceneloc.errors import SceneLocError
from sceneloc.pose.calibration import (
    NOVELTY_CAP,
    PoseCalibration,
    fit_logistic,
    operating_point,
    pose_features,
    reliability_bins,
    view_novelty,
)
from sceneloc.pose.config import PoseConfig, inlier_settings

K = g.intrinsics_matrix(525.0, 525.0, 320.0, 240.0)
SETTINGS = inlier_settings(PoseConfig(), K)


def test_pose_features():
    f = pose_features(np.array([0, 99]), np.array([100, 4800]))
    assert np.allclose(f, [[0.0, 0.0], [math.log(100), 99 / 4800]])


def _looking_along_z(centre, yaw_deg=0.0):
    """Camera-to-world pose at ``centre`` whose optical axis is +z turned ``yaw_deg`` about y."""
    a = math.radians(yaw_deg)
    R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return g.make_pose(R, np.asarray(centre, dtype=float))


def test_view_novelty_against_closed_form():
    centres, axes = np.array([[0.0, 0, 0], [5.0, 0, 0]]), np.array([[0.0, 0, 1], [1.0, 0, 0]])
    poses = np.stack([_looking_along_z([0.15, 0, 0]),            # 15 cm from view 0, same axis: 0.5
                      _looking_along_z([0, 0, 0], 45.0),          # same place, 45 deg: 1.5
                      _looking_along_z([5.0, 0, 0.06], 90.0),     # 6 cm from view 1, its axis (+x): 0.2
                      _looking_along_z([40.0, 0, 0]),             # far from both: capped
                      np.full((4, 4), np.nan)])                   # no pose: as new as can be
    np.testing.assert_allclose(view_novelty(poses, centres, axes), [0.5, 1.5, 0.2, NOVELTY_CAP, NOVELTY_CAP],
                               atol=1e-9)


def test_calibration_with_view_novelty_lowers_the_probability_of_new_views(tmp_path):
    """Held-out poses whose success depends on the novelty of their view at equal inlier counts:
    the fitted model gives a pose far from every mapping view a lower probability than one beside a
    view, keeps the mapping views through a file round trip, and needs the pose."""
    rng = np.random.default_rng(3)
    n = 400
    inliers, novelty = rng.integers(200, 2000, n), rng.uniform(0, NOVELTY_CAP, n)
    p = 1 / (1 + np.exp(-(2.0 * (np.log1p(inliers) - 6.5) - 2.5 * (novelty - 1.0))))
    error = np.where(rng.random(n) < p, 0.5, 2.0)
    views = {"centres": [[0.0, 0.0, 0.0]], "axes": [[0.0, 0.0, 1.0]]}
    cal = PoseCalibration.fit({"rgbd": (inliers, np.full(n, 4800), error, novelty)}, SETTINGS, views)
    near = cal.probability("rgbd", SETTINGS, 900, 4800, pose=_looking_along_z([0.03, 0, 0]))
    far = cal.probability("rgbd", SETTINGS, 900, 4800, pose=_looking_along_z([0.6, 0, 0]))
    assert far < near - 0.3
    assert math.isnan(cal.probability("rgbd", SETTINGS, 900, 4800))          # no pose, no novelty
    cal.save(tmp_path)
    again = PoseCalibration.load(tmp_path)
    assert again.views == views
    assert again.probability("rgbd", SETTINGS, 900, 4800, pose=_looking_along_z([0.6, 0, 0])) == pytest.approx(far)


def test_fit_logistic_recovers_the_generating_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40000, 2))
    w_true = np.array([-0.5, 2.0, -1.0])
    p = 1 / (1 + np.exp(-(w_true[0] + x @ w_true[1:])))
    y = (rng.random(len(p)) < p).astype(float)
    w = fit_logistic(x, y, ridge=0.0)
    assert np.allclose(w, w_true, atol=0.06)


def test_ridge_keeps_separable_data_finite():
    x = np.array([[-1.0], [-0.5], [0.5], [1.0]])
    w = fit_logistic(x, np.array([0, 0, 1, 1.0]), ridge=1.0)
    assert np.all(np.isfinite(w)) and 0 < w[1] < 10


def _samples(n=200, seed=0):
    rng = np.random.default_rng(seed)
    inliers = rng.integers(0, 2000, n)
    success = rng.random(n) < inliers / 2000   # more inliers, more often right
    return inliers, np.full(n, 4800), np.where(success, 0.5, 2.0)


def test_calibration_probabilities_rise_with_inliers_and_round_trip(tmp_path):
    cal = PoseCalibration.fit({"rgb": _samples()}, SETTINGS)
    low, high = cal.probability("rgb", SETTINGS, 100, 4800), cal.probability("rgb", SETTINGS, 1900, 4800)
    assert 0 < low < 0.3 < 0.7 < high < 1
    assert cal.probability("rgb", SETTINGS, 1900, 4800, success=False) == 0.0
    assert math.isnan(cal.probability("rgbd", SETTINGS, 1900, 4800))      # no model for this mode
    for other in (PoseConfig(method="confidence"), PoseConfig(inlier_threshold_px=40.0),
                  PoseConfig(polish_thresholds_px=(15.0,))):               # fitted under other settings
        assert math.isnan(cal.probability("rgb", inlier_settings(other, K), 1900, 4800))
    cal.save(tmp_path)
    again = PoseCalibration.load(tmp_path)
    assert again.probability("rgb", SETTINGS, 700, 4800) == pytest.approx(cal.probability("rgb", SETTINGS, 700, 4800))
    assert PoseCalibration.load(tmp_path / "nowhere") is None


def test_a_setting_of_one_mode_leaves_the_other_modes_calibration_valid():
    cal = PoseCalibration.fit({"rgb": _samples(), "rgbd": _samples(seed=1)}, SETTINGS)
    for rgbd_only in (PoseConfig(polish_thresholds_m=(0.05,)), PoseConfig(depth_offset_sigma_m=0.0)):
        settings = inlier_settings(rgbd_only, K)
        assert cal.probability("rgb", settings, 1900, 4800) == cal.probability("rgb", SETTINGS, 1900, 4800)
        assert math.isnan(cal.probability("rgbd", settings, 1900, 4800))
    settings = inlier_settings(PoseConfig(inlier_threshold_px=40.0), K)
    assert math.isnan(cal.probability("rgb", settings, 1900, 4800))
    assert cal.probability("rgbd", settings, 1900, 4800) == cal.probability("rgbd", SETTINGS, 1900, 4800)


def test_inlier_settings_hold_across_focal_lengths():
    """The default threshold is an angle: a camera of half the focal length has the same settings."""
    half = g.intrinsics_matrix(262.5, 262.5, 160.0, 120.0)
    assert inlier_settings(PoseConfig(), half) == SETTINGS
    assert SETTINGS["threshold_rad"] == pytest.approx(20.0 / 525.0, abs=1e-6)
    # a threshold in pixels is not an angle: at half the focal length it is twice as wide
    fixed = PoseConfig(inlier_threshold_px=20.0)
    wide, narrow = inlier_settings(fixed, half)["threshold_rad"], inlier_settings(fixed, K)["threshold_rad"]
    assert wide == pytest.approx(2 * narrow)


def test_calibration_file_without_settings_matches_none(tmp_path):
    """A calibration saved before the settings were recorded gives no probability (NaN), not a wrong one."""
    cal = PoseCalibration.fit({"rgb": _samples()}, SETTINGS)
    cal.save(tmp_path)
    raw = json.loads((tmp_path / "calibration.json").read_text())
    del raw["settings"]
    raw["method"] = "ransac"
    (tmp_path / "calibration.json").write_text(json.dumps(raw))
    assert math.isnan(PoseCalibration.load(tmp_path).probability("rgb", SETTINGS, 700, 4800))


def test_too_few_frames_give_no_model_and_bad_file_is_one_line(tmp_path):
    inl, n, ok = _samples(5)
    assert PoseCalibration.fit({"rgb": (inl, n, ok)}, SETTINGS).modes == {}
    (tmp_path / "calibration.json").write_text("{\"modes\": 3}")
    with pytest.raises(SceneLocError, match="calibration.json: not a pose calibration file"):
        PoseCalibration.load(tmp_path)


def test_reliability_bins_by_hand():
    p = np.array([0.1, 0.15, 0.5, 0.9, 0.95, np.nan])
    s = np.array([0, 1, 1, 1, 1, 1], dtype=bool)
    rows = reliability_bins(p, s, bins=2)
    assert [r["frames"] for r in rows] == [2, 3]
    assert rows[0]["predicted"] == pytest.approx(0.125) and rows[0]["observed"] == 0.5
    assert rows[1]["predicted"] == pytest.approx(2.35 / 3) and rows[1]["observed"] == 1.0


def test_operating_point_by_hand():
    p = np.array([0.2, 0.4, 0.6, 0.8])
    s = np.array([0, 1, 0, 1], dtype=bool)
    op = operating_point(p, s, 0.5)
    assert op == {"min_probability": 0.5, "wrong_rejected": 0.5, "right_kept": 0.5, "kept": 0.5,
                  "accuracy_of_kept": 0.5}
