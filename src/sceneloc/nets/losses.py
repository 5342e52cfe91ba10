"""Losses of the mapping stage (paper section III-A/III-B) and the reprojection loss of DSAC*/ACE.

Shapes: predictions and targets ``(B, 3, h, w)`` in metres, masks ``(B, h, w)`` bool.
"""

from __future__ import annotations

import math

import torch

#: Confidence scale s of delta = exp(-s ||X - X_hat||): a 10 cm error gets 0.75 (paper III-D).
INLIER_THRESHOLD_M = 0.10  # the paper's t_inlier (IV): a scene coordinate within 10 cm is correct
CONFIDENCE_SCALE = -math.log(0.75) / 0.1  # = 2.8768


def tukey_biweight(r: torch.Tensor, c: float) -> torch.Tensor:
    """Tukey's biweight rho (paper eq. 4), elementwise: c^2/6 (1 - (1 - (r/c)^2)^3) inside |r| <= c, c^2/6 outside."""
    inside = (1.0 - (1.0 - (r / c) ** 2) ** 3) * (c * c / 6.0)
    return torch.where(r.abs() <= c, inside, torch.full_like(r, c * c / 6.0))


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, h, w)`` values over valid pixels (pixels without ground truth are ignored)."""
    m = mask.to(per_pixel.dtype)
    return (per_pixel * m).sum() / m.sum().clamp_min(1.0)


def tukey_biweight_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, c: float) -> torch.Tensor:
    """L_coords (paper eq. 3): per-pixel sum over the 3 coordinates of rho(r), averaged over valid pixels."""
    return _masked_mean(tukey_biweight(pred - target, c).sum(1), mask)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """P_l1's loss: per-pixel sum of absolute coordinate residuals, averaged over valid pixels."""
    return _masked_mean((pred - target).abs().sum(1), mask)


#: The mapping losses by name (``coordinate_loss``) and the neighbourhoods of the smoothness term.
COORDINATE_LOSSES = ("l1", "tukey", "tukey+smooth")
NEIGHBOURHOODS = (4, 8)


def neighbour_offsets(k: int = 8) -> list[tuple[int, int]]:
    """The 4- or 8-neighbourhood K as (dy, dx) offsets."""
    four = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if k == 4:
        return four
    if k == 8:
        return four + [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    raise ValueError("neighbourhood must be 4 or 8")


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]`` with zero padding (channels-first trailing dims)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def smoothness_weights(depth: torch.Tensor, mask: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Depth-based neighbour weights (paper eq. 5): ``(B, K, h, w)``.

    ``w_ij = exp(-|d_i - d_j|) / sum_k exp(-|d_i - d_k|)`` over the valid neighbours of a valid pixel
    i; invalid pixels (and neighbours outside the image or without depth) get weight 0, so each valid
    pixel with at least one valid neighbour has weights summing to 1.
    """
    per_neighbour = []
    for dy, dx in neighbour_offsets(k):
        dj = _shift(depth, dy, dx)
        mj = _shift(mask.to(depth.dtype), dy, dx)
        per_neighbour.append(torch.exp(-(depth - dj).abs()) * mj * mask)
    raw = torch.stack(per_neighbour, dim=1)
    return raw / raw.sum(1, keepdim=True).clamp_min(1e-12)


def _overlap(dy: int, dx: int, h: int, w: int) -> tuple[slice, slice, slice, slice]:
    """Rows/cols of pixels i whose neighbour j = i + (dy, dx) lies inside an ``h x w`` image, and of those j."""
    ri, ci = slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0))
    rj, cj = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    return ri, ci, rj, cj


def smoothness_loss(pred: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor, k: int = 8) -> torch.Tensor:
    """L_smooth (paper eq. 6) ``sum_j w_ij ||X_i - X_j||``, averaged over valid pixels.

    The paper sums over pixels; we average so the term keeps the scale of L_coords (which the paper
    itself averages) at any resolution. Differences are taken on overlapping views (no padded
    copies): this term runs at full resolution every step.
    """
    with torch.no_grad():
        weights = smoothness_weights(depth, mask, k)
    h, w = depth.shape[-2:]
    total = pred.new_zeros(())
    for n, (dy, dx) in enumerate(neighbour_offsets(k)):
        ri, ci, rj, cj = _overlap(dy, dx, h, w)
        diff = pred[..., ri, ci] - pred[..., rj, cj]
        dist = torch.sqrt((diff * diff).sum(1) + 1e-12)  # eps: finite gradient where X_i == X_j
        total = total + (weights[:, n, ri, ci] * dist).sum()
    return total / mask.sum().clamp_min(1)


def coordinate_loss(name: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    depth: torch.Tensor | None = None, c: float = 1.0, smooth_weight: float = 1.0,
                    neighbourhood: int = 8) -> torch.Tensor:
    """The mapping loss by name: ``l1`` (P_l1), ``tukey`` (P_tukey) or ``tukey+smooth`` (P_smooth)."""
    if name == "l1":
        return l1_loss(pred, target, mask)
    if name == "tukey":
        return tukey_biweight_loss(pred, target, mask, c)
    if name == "tukey+smooth":
        if depth is None:
            raise ValueError("the tukey+smooth loss weighs neighbours by depth: pass depth")
        smoothness = smoothness_loss(pred, depth, mask, neighbourhood)
        return tukey_biweight_loss(pred, target, mask, c) + smooth_weight * smoothness
    raise ValueError(f"unknown loss {name!r} (choose {', '.join(COORDINATE_LOSSES)})")


def confidence_target(pred: torch.Tensor, target: torch.Tensor, s: float = CONFIDENCE_SCALE) -> torch.Tensor:
    """delta = exp(-s ||X - X_hat||) for points ``(..., 3)`` -> ``(...)``."""
    return torch.exp(-s * torch.linalg.vector_norm(pred - target, dim=-1))
