"""Losses against hand-computed values (paper eq. 3-7)."""

import math

import pytest
import torch

from sceneloc.nets.losses import (
    CONFIDENCE_SCALE,
    confidence_target,
    coordinate_loss,
    l1_loss,
    smoothness_loss,
    smoothness_weights,
    tukey_biweight,
    tukey_biweight_loss,
)


def test_tukey_closed_form_inside_and_outside_c():
    c = 2.0
    r = torch.tensor([0.0, 0.5, -1.0, 1.9999, 2.0, -3.0, 10.0])
    expected = []
    for x in r.tolist():
        if abs(x) <= c:
            expected.append(c * c / 6 * (1 - (1 - (x / c) ** 2) ** 3))
        else:
            expected.append(c * c / 6)
    assert torch.allclose(tukey_biweight(r, c), torch.tensor(expected), atol=1e-6)
    # by hand: r = 1, c = 2 -> 4/6 * (1 - (3/4)^3) = 0.3854166...
    assert tukey_biweight(torch.tensor(1.0), 2.0).item() == pytest.approx(4 / 6 * (1 - 27 / 64), abs=1e-7)


def test_tukey_loss_averages_valid_pixels_and_sums_coordinates():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.zeros(1, 3, 1, 2)
    target[0, :, 0, 0] = torch.tensor([1.0, 0.0, 5.0])   # valid: rho(1) + rho(0) + c^2/6
    target[0, :, 0, 1] = torch.tensor([100.0, 100.0, 100.0])  # masked out: must not count
    mask = torch.tensor([[[True, False]]])
    c = 2.0
    want = (4 / 6 * (1 - 27 / 64)) + 0.0 + 4 / 6
    assert tukey_biweight_loss(pred, target, mask, c).item() == pytest.approx(want, rel=1e-6)


def test_l1_loss_by_hand():
    pred = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    target = torch.zeros(1, 3, 1, 1)
    assert l1_loss(pred, target, torch.ones(1, 1, 1, dtype=torch.bool)).item() == pytest.approx(3.5)


def test_smoothness_weights_sum_to_one_and_skip_invalid():
    torch.manual_seed(0)
    depth = torch.rand(2, 6, 7) * 3 + 0.5
    mask = torch.rand(2, 6, 7) > 0.3
    w = smoothness_weights(depth, mask, k=8)
    s = w.sum(1)
    # Valid pixels with at least one valid neighbour: weights sum to 1; invalid pixels: all zero.
    from sceneloc.nets.losses import _shift, neighbour_offsets
    has_nb = torch.stack([_shift(mask.float(), dy, dx) for dy, dx in neighbour_offsets(8)]).sum(0) > 0
    assert torch.allclose(s[mask & has_nb], torch.ones_like(s[mask & has_nb]), atol=1e-6)
    assert torch.all(w[:, :, ~mask[0]][0] == 0) and torch.all(s[~mask] == 0)
    # A neighbour without depth gets weight 0.
    for n, (dy, dx) in enumerate(neighbour_offsets(8)):
        nb_valid = _shift(mask.float(), dy, dx) > 0
        assert torch.all(w[:, n][~nb_valid] == 0)


def test_smoothness_weights_follow_eq5_by_hand():
    # centre pixel of a 3x3 patch, 4-neighbourhood, depths differ by 0, 1, 2, 3 metres
    depth = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 1.0, 4.0], [0.0, 1.0, 0.0]]])
    mask = torch.tensor([[[False, True, False], [True, True, True], [False, True, False]]])
    w = smoothness_weights(depth, mask, k=4)[0, :, 1, 1]  # order: up, down, left, right
    e = torch.exp(-torch.tensor([0.0, 0.0, 1.0, 3.0]))
    assert torch.allclose(w, e / e.sum(), atol=1e-6)


def test_smoothness_loss_zero_for_constant_and_positive_otherwise():
    depth = torch.ones(1, 4, 4)
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    flat = torch.ones(1, 3, 4, 4)
    assert smoothness_loss(flat, depth, mask).item() == pytest.approx(0.0, abs=1e-5)
    ramp = torch.zeros(1, 3, 4, 4)
    ramp[0, 0] = torch.arange(4.0).view(1, 4)  # x grows by 1 per column
    val = smoothness_loss(ramp, depth, mask, k=4).item()
    # every pixel: weights uniform over its valid 4-neighbours; horizontal neighbours differ by 1
    assert 0.0 < val < 1.0


def test_coordinate_loss_dispatch_and_unknown():
    pred, target = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    mask, depth = torch.ones(1, 2, 2, dtype=torch.bool), torch.ones(1, 2, 2)
    assert coordinate_loss("l1", pred, target, mask).item() == pytest.approx(3.0)
    t = coordinate_loss("tukey", pred, target, mask, c=2.0).item()
    assert t == pytest.approx(3 * 4 / 6 * (1 - 27 / 64), rel=1e-6)
    assert coordinate_loss("tukey+smooth", pred, target, mask, depth, c=2.0).item() == pytest.approx(t)
    with pytest.raises(ValueError):
        coordinate_loss("l2", pred, target, mask)


def test_confidence_target_formula():
    assert CONFIDENCE_SCALE == pytest.approx(2.8768, abs=1e-4)
    X = torch.zeros(4, 3)
    X_hat = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0, 0.3, 0.4], [3.0, 0, 0]])
    d = confidence_target(X_hat, X)
    want = torch.tensor([1.0, 0.75, math.exp(-CONFIDENCE_SCALE * 0.5), math.exp(-CONFIDENCE_SCALE * 3)])
    assert torch.allclose(d, want, atol=1e-5)


def test_smoothness_loss_matches_brute_force_eq5_eq6():
    """Plain loops over pixels and neighbours, straight from the paper's equations."""
    torch.manual_seed(1)
    h, w = 5, 6
    depth = torch.rand(1, h, w) * 4
    mask = torch.rand(1, h, w) > 0.25
    pred = torch.randn(1, 3, h, w)
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    total, count = 0.0, 0
    for y in range(h):
        for x in range(w):
            if not mask[0, y, x]:
                continue
            count += 1
            nbs = [(y + dy, x + dx) for dy, dx in offsets
                   if 0 <= y + dy < h and 0 <= x + dx < w and mask[0, y + dy, x + dx]]
            z = sum(math.exp(-abs(depth[0, y, x] - depth[0, j, i])) for j, i in nbs)
            for j, i in nbs:
                wij = math.exp(-abs(depth[0, y, x] - depth[0, j, i])) / z
                total += wij * torch.linalg.vector_norm(pred[0, :, y, x] - pred[0, :, j, i]).item()
    assert smoothness_loss(pred, depth, mask, k=8).item() == pytest.approx(total / count, rel=1e-5)


def test_context_normalised_pointnet_is_permutation_equivariant_and_set_relative():
    import torch

    from sceneloc.nets.models import ConfidencePointNet
    torch.manual_seed(0)
    net = ConfidencePointNet(blocks=2).eval()
    x = torch.randn(2, 100, 5)
    perm = torch.randperm(100)
    with torch.no_grad():
        y = net.confidence(x)
        assert y.shape == (2, 100) and ((y >= 0) & (y <= 1)).all()
        assert torch.allclose(net.confidence(x[:, perm]), y[:, perm], atol=1e-5)
        # context normalisation: the same point in another set gets another confidence
        other = torch.cat([x[:, :50], 3 * torch.randn(2, 50, 5)], dim=1)
        assert not torch.allclose(net.confidence(other)[:, :50], y[:, :50], atol=1e-3)
