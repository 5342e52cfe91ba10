"""DSAC: differentiable RANSAC with a learned hypothesis score, trained end to end.

After Brachmann et al., "DSAC - Differentiable RANSAC for Camera Localization" (CVPR 2017), with
DSAC*'s soft inlier count as a parameter-free score. For one image with predicted scene
coordinates ``Y`` on the network's output grid:

1. hypotheses ``h_J`` from minimal sets ``J``: 4 2D-3D correspondences (PnP, RGB) or 3 3D-3D
   correspondences (Kabsch, RGB-D);
2. scores ``s(h_J, Y; v)``: a small :class:`ScoreCNN` on the image of the hypothesis' errors over
   the grid (reprojection errors, or 3D distances, in units of the inlier threshold), or the soft
   inlier fraction ``mean_i sigmoid(beta (1 - e_i / tau))``;
3. selection with ``P(J) = softmax(alpha s)``: argmax (test time), SoftAM (the P-weighted average
   pose) or ``J ~ P(J)`` (DSAC);
4. refinement ``R(h_J, Y)``: a few rounds of re-fitting on the softly weighted inliers;
5. training minimises ``E_J[l(R(h_J, Y), h*)] = sum_J P(J) l_J``, ``l = max(rotation deg, translation cm)``.

Steps 1-5 are differentiable in torch: Kabsch through its SVD (``geometry.kabsch``), PnP through
a few unrolled Gauss-Newton steps on the reprojection error started from an OpenCV solve on
detached values; gradients reach both the Score CNN and the coordinate network.

The stage lives in the map directory beside the base map, which it never overwrites:
``coordinates_dsac.pt`` (fine-tuned coordinate network), ``score.pt`` (Score CNN, score ``cnn``
only), ``dsac_config.json`` (:class:`DSACConfig`) and ``dsac_report.json``. Poses are
camera-to-world 4x4 (``geometry`` convention) throughout; geometry runs in float64.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from .progress import progress as progress_bar

from .data import load_scene
from .errors import SceneLocError
from .geometry import backproject, invert_pose, kabsch, make_pose, rotation_error_deg, solve_pnp
from .networks import SceneNormalisation, build_coordinate_network, output_pixel_centres
from .pose import MIN_POINTS, PoseResult, sample_subsets, spans_a_plane
from .scenemap import DEFAULT_POSE_POINTS, Map, grid_step, load_weights
# make_batch: the cached-frame batch with stage 1's photometric jitter (reused, not copied)
from .training import FrameCache, MappingConfig, make_batch, seed_everything

#: ``Map.localize`` methods served here, and the selection each uses.
DSAC_METHODS = {"dsac": "argmax", "softam": "softam"}
MODES = ("rgb", "rgbd")
SCORES = ("cnn", "soft-inliers")
OBJECTIVES = ("expected", "sampled")
SELECTIONS = ("argmax", "softam", "sample")
LOSSES = ("max", "sum")
#: Files of the stage in the map directory (config last: it marks the stage as complete).
STAGE_FILES = ("coordinates_dsac.pt", "score.pt", "dsac_report.json", "dsac_config.json")
MIN_DEPTH = 0.01  # metres: a point nearer to (or behind) the camera has no usable projection


@dataclass(frozen=True)
class DSACConfig:
    """Every option of the DSAC stage (estimation and fine-tuning); DSAC*'s values where it has one.

    Attributes:
        mode: fine-tune for ``rgb`` (PnP) or ``rgbd`` (Kabsch with the frame's depth).
        score: ``cnn`` (a learned :class:`ScoreCNN`, DSAC) or ``soft-inliers`` (DSAC*, no weights).
        hypotheses: minimal-set hypotheses per training image (DSAC*: 64).
        threshold_px / threshold_m: inlier threshold tau of PnP / Kabsch errors.
        alpha: softmax scale of the scores, ``P(J) ~ exp(alpha s_J)``; with the soft inlier
            fraction as score this is DSAC*'s inlierAlpha (100).
        beta: sigmoid sharpness of the soft inlier score in units of 1/tau (DSAC*'s inlierBeta, 0.5).
        refine_beta: sharper sigmoid for the refinement weights (near-hard inlier sets, still smooth).
        refine_rounds, refine_steps: re-fitting rounds, and Gauss-Newton steps per round for PnP.
        hypothesis_steps: Gauss-Newton steps that make a PnP hypothesis differentiable.
        error_clamp: the Score CNN sees errors clamped at this many thresholds.
        score_width: channels of the Score CNN's first layer.
        loss: ``max`` (DSAC: max(rotation deg, translation cm)) or ``sum`` of the two.
        loss_clamp: per-hypothesis loss cap, so that a wild hypothesis does not dominate the gradient.
        objective: ``expected`` (exact ``sum_J P(J) l_J``, all hypotheses refined) or ``sampled``
            (REINFORCE on ``samples`` draws ``J ~ P``; only those are refined).
        minutes / iterations: fine-tuning budget (iterations, when set, wins; one image per step).
        lr_coordinates / lr_score: Adam learning rates of the coordinate network (DSAC*'s 1e-6: 1e-5
            already undoes an over-fitted map within tens of steps) and of the Score CNN.
        grad_clip: gradient norm cap per network.
        aug_brightness / aug_contrast: photometric jitter (geometric augmentation would change the pose).
        eval_frames: training frames on which the expected loss is reported before and after.
        seed: seeds frame order, augmentation, hypothesis sampling and the Score CNN's initialisation.
    """
    mode: str = "rgb"
    score: str = "cnn"
    hypotheses: int = 64
    threshold_px: float = 10.0
    threshold_m: float = 0.1
    alpha: float = 100.0
    beta: float = 0.5
    refine_beta: float = 5.0
    refine_rounds: int = 3
    refine_steps: int = 2
    hypothesis_steps: int = 2
    error_clamp: float = 10.0
    score_width: int = 16
    loss: str = "max"
    loss_clamp: float = 100.0
    objective: str = "expected"
    samples: int = 8
    minutes: float = 5.0
    iterations: int | None = None
    lr_coordinates: float = 1e-6
    lr_score: float = 1e-4
    grad_clip: float = 10.0
    aug_brightness: float = 0.1
    aug_contrast: float = 0.1
    eval_frames: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("mode", MODES), ("score", SCORES), ("objective", OBJECTIVES), ("loss", LOSSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DSACConfig.{name}={getattr(self, name)!r}; choose from {', '.join(allowed)}")
        for name in ("hypotheses", "threshold_px", "threshold_m", "alpha", "beta", "refine_beta", "error_clamp",
                     "loss_clamp", "samples", "score_width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DSACConfig.{name}={getattr(self, name)} must be positive")
        if self.iterations is None and not self.minutes > 0:
            raise ValueError("DSACConfig needs minutes > 0 or iterations")

    def threshold(self, solver: str) -> float:
        """Inlier threshold tau for ``solver`` (``pnp``: pixels, ``kabsch``: metres)."""
        return self.threshold_px if solver == "pnp" else self.threshold_m


# ------------------------------------------------------------------------------ correspondences


@dataclass
class Matches:
    """One image's dense correspondences on the (thinned) output grid, float64 torch.

    ``scene`` keeps its autograd graph; ``camera`` (RGB-D) is zero where depth is missing, so
    every tensor is finite and invalid cells simply get zero weight (``valid`` False).
    """
    pixels: torch.Tensor          # (N, 2) full-resolution pixel centres (u, v)
    scene: torch.Tensor           # (N, 3) predicted scene coordinates, metres
    K: torch.Tensor               # (3, 3) intrinsics of the full-resolution image
    camera: torch.Tensor | None   # (N, 3) camera-frame points from depth (Kabsch), None for PnP
    valid: torch.Tensor           # (N,) bool
    grid_hw: tuple[int, int]      # (h, w) with h * w = N

    @property
    def solver(self) -> str:
        return "pnp" if self.camera is None else "kabsch"


def make_matches(pixels, scene, K, grid_hw: tuple[int, int], camera=None) -> Matches:
    """:class:`Matches` from pixels ``(N, 2)``, scene coordinates ``(N, 3)`` (tensor with its graph, or
    array), ``K (3, 3)`` and optional camera points ``(N, 3)`` (NaN or z <= 0 where depth is missing)."""
    scene = torch.as_tensor(scene).reshape(-1, 3).to(torch.float64)
    f64 = {"dtype": torch.float64, "device": scene.device}
    pixels = torch.as_tensor(pixels, **f64).reshape(-1, 2)
    valid = torch.isfinite(scene).all(-1) & torch.isfinite(pixels).all(-1)
    if camera is not None:
        camera = torch.as_tensor(camera, **f64).reshape(-1, 3)
        has_depth = torch.isfinite(camera).all(-1) & (camera[:, 2] > 0)
        valid &= has_depth
        camera = torch.where(has_depth[:, None], camera, torch.zeros_like(camera))
    scene = torch.where(valid[:, None], scene, torch.zeros_like(scene))
    return Matches(pixels, scene, torch.as_tensor(K, **f64), camera, valid, tuple(grid_hw))


# ------------------------------------------------------------------------------ torch pose helpers


def _skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``(..., 3, 3)`` of ``v (..., 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape + (3,))


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` of axis-angle vectors ``w (..., 3)`` (Rodrigues).

    Taylor coefficients near 0, where the Gauss-Newton updates converge: sin(t)/t has no usable
    gradient at t = 0 otherwise.
    """
    th2 = (w * w).sum(-1)[..., None, None]
    small = th2 < 1e-8
    th2_safe = torch.where(small, torch.ones_like(th2), th2)
    th = th2_safe.sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / th2_safe)
    W = _skew(w)
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * W + b * (W @ W)


def nearest_rotation(M: torch.Tensor, iterations: int = 12) -> torch.Tensor:
    """Rotation factor of the polar decomposition of ``M (3, 3)`` (det > 0): the rotation nearest in
    Frobenius norm, by Newton's iteration ``X <- (g X + X^-T / g) / 2`` with Higham's scaling ``g``.

    Not an SVD: its backward divides by differences of singular values, which vanish when the
    averaged rotations agree (M near a rotation), exactly the case of a good selection.
    """
    X = M
    for _ in range(iterations):
        X_inv_t = torch.linalg.inv(X).transpose(-1, -2)
        g = (torch.linalg.matrix_norm(X_inv_t) / torch.linalg.matrix_norm(X)).sqrt()
        X = 0.5 * (g * X + X_inv_t / g)
    return X


# ------------------------------------------------------------------------------------ hypotheses


def sample_minimal_sets(valid: np.ndarray, count: int, solver: str, rng: np.random.Generator) -> np.ndarray:
    """``count`` minimal sets ``(count, k)`` of distinct indices of ``valid (N,)`` cells; k = 4 for PnP
    (P3P plus one point to disambiguate, as DSAC), 3 for Kabsch. Empty when fewer than k are valid."""
    idx = np.flatnonzero(valid)
    k = MIN_POINTS[solver]
    if len(idx) < k:
        return np.zeros((0, k), dtype=np.int64)
    return idx[sample_subsets(len(idx), count, k, rng)]


def kabsch_hypotheses(m: Matches, sets: np.ndarray) -> torch.Tensor:
    """Camera-to-world poses ``(B, 4, 4)`` from 3D-3D minimal sets ``(B, 3)``; differentiable (SVD)."""
    R, t = kabsch(m.camera[sets], m.scene[sets])
    return make_pose(R, t)


def refine_pnp_gauss_newton(poses: torch.Tensor, scene: torch.Tensor, pixels: torch.Tensor, K: torch.Tensor,
                            weights: torch.Tensor | None = None, steps: int = 3,
                            damping: float = 1e-3) -> torch.Tensor:
    """Unrolled Levenberg-Marquardt on the weighted reprojection error: differentiable PnP.

    Args:
        poses: ``(B, 4, 4)`` camera-to-world starting poses (e.g. an OpenCV solve, detached).
        scene: ``(B, M, 3)`` or ``(M, 3)`` scene coordinates; pixels: ``(B, M, 2)`` or ``(M, 2)``.
        K: ``(3, 3)``; weights: optional ``(B, M)`` non-negative weights.
        steps: updates; damping: Marquardt's lambda (relative to the diagonal of J^T W J).
    Returns:
        ``(B, 4, 4)`` camera-to-world poses. Converged steps make the gradient w.r.t. ``scene``
        that of the least-squares optimum (implicit function), whatever the start's gradient.
    """
    T = invert_pose(poses)
    R, t = T[:, :3, :3], T[:, :3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    eye = torch.eye(6, dtype=poses.dtype, device=poses.device)
    for _ in range(steps):
        RX = scene @ R.transpose(-1, -2)                                      # (B, M, 3)
        a, b, c = RX.unbind(-1)
        x, y = a + t[:, None, 0], b + t[:, None, 1]
        z = (c + t[:, None, 2]).clamp_min(MIN_DEPTH)
        u, v = x / z, y / z
        r = torch.stack([fx * u + cx, fy * v + cy], -1) - pixels             # (B, M, 2)
        # Jacobians for R <- exp(dw) R, t <- t + dt: d(uv)/dXc (-[R X]_x | I), written out because
        # batched 2x3 @ 3x3 products are far slower than these elementwise terms.
        o = torch.zeros_like(z)
        Ju = fx * torch.stack([-u * b / z, c / z + u * a / z, -b / z, 1 / z, o, -u / z], -1)
        Jv = fy * torch.stack([-c / z - v * b / z, v * a / z, a / z, o, 1 / z, -v / z], -1)
        J = torch.stack([Ju, Jv], -2).flatten(1, 2)                           # (B, 2M, 6)
        w = torch.ones_like(z) if weights is None else weights
        Jw = J * w.repeat_interleave(2, dim=1)[..., None]
        A = Jw.transpose(-1, -2) @ J                                          # (B, 6, 6) J^T W J
        g = Jw.transpose(-1, -2) @ r.flatten(1, 2)[..., None]                 # (B, 6, 1) J^T W r
        A = A + damping * torch.diag_embed(torch.diagonal(A, dim1=-2, dim2=-1)) + 1e-12 * eye
        delta = -torch.linalg.solve(A, g)[..., 0]
        R = so3_exp(delta[:, :3]) @ R
        t = t + delta[:, 3:]
    return invert_pose(make_pose(R, t))


def pnp_hypotheses(m: Matches, sets: np.ndarray, steps: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """Camera-to-world poses ``(B', 4, 4)`` from 2D-3D minimal sets ``(B, 4)``, and the sets kept.

    OpenCV's P3P solves the set's first 3 points on detached values and picks among its solutions
    by the 4th. ``steps`` Gauss-Newton steps on those 3 points (6 equations, 6 unknowns, zero
    residual: Newton's method) then make the pose a differentiable function of the scene
    coordinates with the exact derivative of the P3P solution. Failed solves are dropped.
    """
    scene, pixels, K = (a.detach().cpu().numpy() for a in (m.scene, m.pixels, m.K))
    starts, kept = [], []
    for b, s in enumerate(sets):
        T = solve_pnp(scene[s], pixels[s], K, "p3p")
        if T is not None:
            starts.append(T)
            kept.append(b)
    if not kept:
        return m.scene.new_zeros((0, 4, 4)), sets[:0]
    sets = sets[kept]
    start = torch.as_tensor(np.stack(starts), dtype=torch.float64, device=m.scene.device)
    # Newton from an exact start: no damping needed, and any would slow the decay of the start's influence.
    three = sets[:, :3]
    poses = refine_pnp_gauss_newton(start, m.scene[three], m.pixels[three], m.K, steps=steps, damping=0.0)
    finite = torch.isfinite(poses).all(-1).all(-1)
    return poses[finite], sets[finite.cpu().numpy()]


def solve_hypotheses(m: Matches, sets: np.ndarray, pnp_steps: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """Hypotheses ``(B', 4, 4)`` of the minimal sets ``(B, k)`` that determine a pose, and those sets.

    Coincident or collinear sets are dropped first: they leave the pose undetermined and their
    SVD / normal equations have no finite gradient.
    """
    scene = m.scene.detach().cpu().numpy()
    ok = np.array([spans_a_plane(scene[s]) for s in sets], dtype=bool)
    if m.solver == "kabsch":
        camera = m.camera.cpu().numpy()
        ok &= np.array([spans_a_plane(camera[s]) for s in sets], dtype=bool)
        sets = sets[ok]
        return (kabsch_hypotheses(m, sets) if len(sets) else m.scene.new_zeros((0, 4, 4))), sets
    return pnp_hypotheses(m, sets[ok], pnp_steps)


# ------------------------------------------------------------------------------------- scoring


def hypothesis_errors(poses: torch.Tensor, m: Matches) -> torch.Tensor:
    """Errors ``(B, N)`` of poses ``(B, 4, 4)`` on every grid cell: reprojection error in pixels (PnP)
    or 3D distance in metres (Kabsch); ``inf`` for invalid cells and points behind the camera."""
    if m.solver == "kabsch":
        X = m.camera @ poses[:, :3, :3].transpose(-1, -2) + poses[:, None, :3, 3]
        err = torch.linalg.vector_norm(X - m.scene, dim=-1)
    else:
        T = invert_pose(poses)
        Xc = m.scene @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]
        front = Xc[..., 2] > MIN_DEPTH
        z = torch.where(front, Xc[..., 2], torch.ones_like(Xc[..., 2]))   # finite gradients behind the camera
        uv = Xc[..., :2] / z[..., None] * torch.stack([m.K[0, 0], m.K[1, 1]]) + m.K[:2, 2]
        err = torch.where(front, torch.linalg.vector_norm(uv - m.pixels, dim=-1), torch.inf)
    return torch.where(m.valid, err, torch.inf)


def soft_inlier_score(errors: torch.Tensor, threshold: float, beta: float = 0.5) -> torch.Tensor:
    """DSAC*'s parameter-free score ``(B,)``: the soft inlier count ``sum_i sigmoid(beta (1 - e_i / tau))``
    over errors ``(B, N)``, divided by N so that ``alpha`` does not depend on the grid size."""
    return torch.sigmoid(beta * (1.0 - errors / threshold)).mean(-1)


def error_image(errors: torch.Tensor, grid_hw: tuple[int, int], threshold: float, clamp: float = 10.0) -> torch.Tensor:
    """The Score CNN's input ``(B, 1, h, w)``: errors ``(B, N)`` in thresholds, clamped to ``[0, clamp]``
    (invalid cells read ``clamp``: the CNN never sees an infinity)."""
    return (errors / threshold).clamp(max=clamp).reshape(-1, 1, *grid_hw)


class ScoreCNN(nn.Module):
    """DSAC's learned score ``s(h_J, Y; v)`` of a hypothesis from its error image ``(B, 1, h, w)``.

    A few strided convolutions and global average pooling (any grid size), added to the soft
    inlier fraction of the same image. The last layer starts at zero, so fine-tuning starts from
    DSAC*'s working score rather than from a random ranking that would average every hypothesis.
    """

    def __init__(self, width: int = 16, beta: float = 0.5):
        super().__init__()
        self.beta = beta
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(4 * w, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        base = soft_inlier_score(image.flatten(1), 1.0, self.beta)
        return base + self.head(self.features(image).mean(dim=(2, 3))).squeeze(-1)


def score_hypotheses(errors: torch.Tensor, m: Matches, config: DSACConfig,
                     score_net: ScoreCNN | None = None) -> torch.Tensor:
    """Scores ``(B,)`` of hypotheses from their errors ``(B, N)`` by ``config.score``."""
    tau = config.threshold(m.solver)
    if config.score == "soft-inliers":
        return soft_inlier_score(errors, tau, config.beta)
    if score_net is None:
        raise ValueError("score 'cnn' needs a ScoreCNN")
    p = next(score_net.parameters())
    image = error_image(errors, m.grid_hw, tau, config.error_clamp).to(p.device, p.dtype)
    return score_net(image).to(errors.device, errors.dtype)


def selection_probabilities(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """``P(J) = softmax(alpha s_J)`` over scores ``(B,)``."""
    return torch.softmax(alpha * scores, dim=-1)


def softam(poses: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """SoftAM pose ``(4, 4)``: the ``probs (B,)``-weighted mean of ``poses (B, 4, 4)``.

    Translations are averaged; rotations by their weighted chordal mean (the rotation nearest to
    ``sum_J P(J) R_J``). Should the mean matrix not have a positive determinant (rotations spread
    over ~180 degrees), the most probable hypothesis' rotation is used.
    """
    w = probs / probs.sum()
    M = torch.einsum("b,bij->ij", w, poses[:, :3, :3])
    t = torch.einsum("b,bi->i", w, poses[:, :3, 3])
    R = nearest_rotation(M) if torch.linalg.det(M) > 1e-6 else poses[int(torch.argmax(w)), :3, :3]
    return make_pose(R, t)


# ---------------------------------------------------------------------------------- refinement


def refine_on_inliers(poses: torch.Tensor, m: Matches, threshold: float, rounds: int = 3, beta: float = 5.0,
                      steps: int = 2) -> torch.Tensor:
    """``R(h_J, Y)``: ``rounds`` re-fits of poses ``(B, 4, 4)`` on their inliers, differentiably.

    Each round weighs every cell by ``sigmoid(beta (1 - e / tau))`` (a smooth inlier indicator) and
    re-solves: weighted Kabsch, or ``steps`` Gauss-Newton steps of weighted PnP. A hypothesis with
    less inlier weight than 2 minimal sets keeps its pose: its weighted fit would be singular.
    """
    min_weight = 2 * MIN_POINTS[m.solver]
    for _ in range(rounds):
        w = torch.sigmoid(beta * (1.0 - hypothesis_errors(poses, m) / threshold))     # (B, N)
        fit = torch.nonzero(w.detach().sum(-1) >= min_weight).squeeze(1)
        if len(fit) == 0:
            break
        if m.solver == "kabsch":
            n = len(fit)
            R, t = kabsch(m.camera.expand(n, -1, -1), m.scene.expand(n, -1, -1), w[fit])
            new = make_pose(R, t)
        else:
            new = refine_pnp_gauss_newton(poses[fit], m.scene, m.pixels, m.K, w[fit], steps)
        poses = poses.index_put((fit,), new)
    return poses


def refine(poses: torch.Tensor, m: Matches, config: DSACConfig) -> torch.Tensor:
    """:func:`refine_on_inliers` with the options of ``config``."""
    return refine_on_inliers(poses, m, config.threshold(m.solver), config.refine_rounds, config.refine_beta,
                             config.refine_steps)


# ---------------------------------------------------------------------------------------- loss


def pose_loss(T_est: torch.Tensor, T_gt: torch.Tensor, kind: str = "max", clamp: float | None = None) -> torch.Tensor:
    """DSAC's pose loss ``(...)`` of camera-to-world ``T_est (..., 4, 4)`` against ``T_gt (4, 4)``:
    ``max`` (or ``sum``) of the rotation error in degrees and the camera-centre distance in cm,
    capped at ``clamp`` when given."""
    rot = rotation_error_deg(T_est[..., :3, :3], T_gt[..., :3, :3])
    trans = 100.0 * torch.linalg.vector_norm(T_est[..., :3, 3] - T_gt[..., :3, 3], dim=-1)
    if kind not in LOSSES:
        raise ValueError(f"unknown pose loss {kind!r}; choose from {', '.join(LOSSES)}")
    loss = torch.maximum(rot, trans) if kind == "max" else rot + trans
    return loss if clamp is None else loss.clamp(max=clamp)


def expected_pose_loss(losses: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``E_J[l] = sum_J P(J) l_J`` over losses ``(B,)`` and probabilities ``(B,)`` (sum to 1).

    The mean loss (detached) is subtracted inside and added back: same value, and the same
    gradient since ``sum_J dP(J) = 0``, but the score gradient is formed from centred losses.
    """
    baseline = losses.detach().mean()
    return (probs * (losses - baseline)).sum() + baseline


def sampled_pose_loss(losses: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """REINFORCE surrogate for losses ``(S,)`` of hypotheses drawn ``J_s ~ P`` with ``log P(J_s) (S,)``.

    Its gradient is an unbiased estimate of ``d E_J[l]``: ``(l_s - b_s) d log P(J_s) + d l_s``,
    with ``b_s`` the mean loss of the other draws (leave-one-out, so the baseline adds no bias).
    Its value is not the loss.
    """
    S = len(losses)
    l = losses.detach()
    baseline = (l.sum() - l) / (S - 1) if S > 1 else torch.zeros_like(l)
    return ((l - baseline) * log_probs + losses).mean()


def frame_objective(m: Matches, T_gt: torch.Tensor, config: DSACConfig, score_net: ScoreCNN | None,
                    rng: np.random.Generator) -> tuple[torch.Tensor, float] | None:
    """End-to-end objective of one image: ``(tensor to minimise, expected pose loss)``, or None when
    no hypothesis could be solved.

    ``objective='expected'`` refines every hypothesis and returns ``sum_J P(J) l_J`` (both items
    the same number); ``'sampled'`` refines only ``config.samples`` draws ``J ~ P`` and returns the
    REINFORCE surrogate with the draws' mean loss.
    """
    sets = sample_minimal_sets(m.valid.cpu().numpy(), config.hypotheses, m.solver, rng)
    poses, sets = solve_hypotheses(m, sets, config.hypothesis_steps)
    if len(poses) == 0:
        return None
    log_p = torch.log_softmax(config.alpha * score_hypotheses(hypothesis_errors(poses, m), m, config, score_net), -1)
    if config.objective == "expected":
        losses = pose_loss(refine(poses, m, config), T_gt, config.loss, config.loss_clamp)
        loss = expected_pose_loss(losses, log_p.exp())
        return loss, loss.item()
    drawn = rng.choice(len(poses), size=config.samples, p=log_p.detach().exp().cpu().numpy())
    unique, inverse = np.unique(drawn, return_inverse=True)
    losses = pose_loss(refine(poses[unique], m, config), T_gt, config.loss, config.loss_clamp)[inverse]
    return sampled_pose_loss(losses, log_p[drawn]), losses.mean().item()


# ------------------------------------------------------------------------------------- test time


def estimate_pose_dsac(pixels: np.ndarray, scene_coords: np.ndarray, K: np.ndarray, grid_hw: tuple[int, int],
                       camera_points: np.ndarray | None = None, config: DSACConfig = DSACConfig(),
                       score_net: ScoreCNN | None = None, selection: str = "argmax", hypotheses: int | None = None,
                       min_inliers: int = 30, rng: np.random.Generator | int | None = None) -> PoseResult:
    """Camera pose of one image by DSAC: hypotheses, scores, selection, refinement.

    Args:
        pixels: ``(N, 2)`` full-resolution pixels of the ``grid_hw`` output grid (row-major, N = h w).
        scene_coords: ``(N, 3)`` predicted scene coordinates; K: ``(3, 3)``.
        camera_points: optional ``(N, 3)`` camera-frame points from depth: Kabsch instead of PnP.
        config: thresholds, alpha, beta, refinement (those the stage was trained with).
        score_net: the Score CNN, for ``config.score == 'cnn'``.
        selection: ``argmax`` (refine the best-scoring hypothesis), ``softam`` (refine all that
            matter, then average them by P) or ``sample`` (refine one drawn ``J ~ P``).
        hypotheses: how many (default ``config.hypotheses``); min_inliers: fewer -> no pose.
    Returns:
        :class:`sceneloc.pose.PoseResult`; ``used`` are the final pose's inliers, ``score`` the
        selected hypothesis' score (SoftAM: the P-weighted mean score).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    rng = np.random.default_rng(rng)
    timings = {"sampling": 0.0, "refinement": 0.0}
    with torch.no_grad():
        m = make_matches(pixels, scene_coords, K, grid_hw, camera_points)
        tau = config.threshold(m.solver)
        start = time.perf_counter()
        sets = sample_minimal_sets(m.valid.numpy(), hypotheses or config.hypotheses, m.solver, rng)
        poses, sets = solve_hypotheses(m, sets, config.hypothesis_steps)
        if len(poses) == 0:
            return PoseResult(None, timings_ms=timings, failure="no hypothesis could be solved")
        scores = score_hypotheses(hypothesis_errors(poses, m), m, config, score_net)
        probs = selection_probabilities(scores, config.alpha)
        timings["sampling"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        if selection == "softam":
            keep = probs > 1e-6 * probs.max()  # the rest changes the average by less than 1e-6
            pose = softam(refine(poses[keep], m, config), probs[keep])
            score = float((probs * scores).sum())
        else:
            j = int(torch.argmax(probs)) if selection == "argmax" else int(rng.choice(len(probs), p=probs.numpy()))
            pose, score = refine(poses[j:j + 1], m, config)[0], float(scores[j])
        inliers = np.flatnonzero((hypothesis_errors(pose[None], m)[0] < tau).numpy())
        timings["refinement"] = (time.perf_counter() - start) * 1e3
    needed = max(min_inliers, MIN_POINTS[m.solver])
    if len(inliers) < needed:
        return PoseResult(None, score=score, timings_ms=timings, failure=f"{len(inliers)} inliers, fewer than {needed}")
    if not spans_a_plane(m.scene[inliers].numpy()):
        return PoseResult(None, score=score, timings_ms=timings,
                          failure="inliers are coincident or collinear: pose undetermined")
    return PoseResult(pose.numpy(), len(inliers), inliers, score, timings)


# ------------------------------------------------------------------------------- the map stage


@dataclass
class DSACStage:
    """What ``Map.localize(method='dsac'|'softam')`` uses: options, coordinate network, Score CNN."""
    config: DSACConfig
    coord_net: nn.Module
    score_net: ScoreCNN | None


def load_stage(map_dir: str | Path, map_config: dict, device: str = "cpu") -> DSACStage | None:
    """The DSAC stage stored in ``map_dir``, or None when it has none (no ``dsac_config.json``)."""
    d = Path(map_dir)
    cfg_path = d / "dsac_config.json"
    if not cfg_path.exists():
        return None
    rerun = "re-run 'sceneloc map DATASET MAP_DIR --stage dsac --force'"
    try:
        config = DSACConfig(**json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise SceneLocError(f"{cfg_path}: corrupt DSAC configuration ({str(e).splitlines()[0]}); {rerun}") from None

    def weights(net: nn.Module, name: str) -> nn.Module:
        return load_weights(net, d / name, device, "DSAC", f"; {rerun}").to(device).eval()

    coord_net = weights(build_coordinate_network(map_config["network"]), "coordinates_dsac.pt")
    score_net = weights(ScoreCNN(config.score_width, config.beta), "score.pt") if config.score == "cnn" else None
    return DSACStage(config, coord_net, score_net)


def resolve_stage(the_map, score: str | None = None) -> DSACStage:
    """The stage ``Map.localize`` runs for ``dsac``/``softam`` with hypothesis ``score`` (None: the stage's).

    Loads the map's stage on first use. Without one, ``soft-inliers`` needs no weights and runs on
    the base coordinate network; ``cnn`` is an error that says how to train the stage.
    """
    if score is not None and score not in SCORES:
        raise SceneLocError(f"unknown DSAC score {score!r} (choose {' or '.join(SCORES)})")
    if the_map.dsac is None and the_map.map_dir is not None:
        the_map.dsac = load_stage(the_map.map_dir, the_map.config, the_map.device)
    stage = the_map.dsac
    if stage is None:
        if score != "soft-inliers":
            raise SceneLocError(f"{the_map.map_dir or 'this map'}: no DSAC stage (no dsac_config.json): run "
                                f"'sceneloc map DATASET MAP_DIR --stage dsac', or use --dsac-score soft-inliers")
        return DSACStage(DSACConfig(score="soft-inliers"), the_map.coord_net, None)
    if score == "cnn" and stage.score_net is None:
        raise SceneLocError(f"{the_map.map_dir}: the DSAC stage was trained with --score soft-inliers and has no "
                            f"Score CNN (score.pt); re-run 'sceneloc map ... --stage dsac --score cnn --force'")
    return stage if score is None else replace(stage, config=replace(stage.config, score=score))


# ---------------------------------------------------------------------------------- fine-tuning


@dataclass
class TrainingFrames:
    """Training frames at network resolution: the cache, ground-truth poses and intrinsics, and the
    kept output cells (thinned like ``Map.predict``) with their full-resolution pixel centres."""
    cache: FrameCache
    poses: np.ndarray           # (F, 4, 4) camera-to-world
    Ks: np.ndarray              # (F, 3, 3)
    pixels: np.ndarray          # (h, w, 2)
    step: int

    @classmethod
    def build(cls, frames: list, input_height: int, net: nn.Module) -> "TrainingFrames":
        cache = FrameCache.build(frames, input_height, net.stride, net.multiple, "caching train frames")
        out_hw = cache.masks.shape[1:]
        step = grid_step(out_hw, DEFAULT_POSE_POINTS)
        pixels = output_pixel_centres(out_hw, net.stride, frames[0].load_image().shape[:2], cache.images.shape[1:3])
        return cls(cache, np.stack([f.pose for f in frames]), np.stack([f.K for f in frames]),
                   pixels.numpy()[::step, ::step], step)

    def __len__(self) -> int:
        return len(self.poses)

    def matches(self, i: int, coords: torch.Tensor, mode: str) -> Matches:
        """Matches of frame ``i`` from the network's full output grid ``coords (h, w, 3)`` (metres)."""
        coords = coords[::self.step, ::self.step]
        camera = None
        if mode == "rgbd":
            depth = self.cache.depths[i][::self.step, ::self.step].astype(np.float64)
            camera = backproject(self.pixels, depth, self.Ks[i])
        return make_matches(self.pixels.reshape(-1, 2), coords.reshape(-1, 3), self.Ks[i], coords.shape[:2], camera)


def _predict(net: nn.Module, norm: SceneNormalisation, image: torch.Tensor) -> torch.Tensor:
    """Scene coordinates ``(h, w, 3)`` metres of one image ``(1, 3, H, W)``, with autograd."""
    return norm.to_metres(net(image))[0].permute(1, 2, 0)


def _image(data: TrainingFrames, i: int) -> torch.Tensor:
    return torch.from_numpy(data.cache.images[i]).permute(2, 0, 1)[None].float().div_(255.0)


def mean_expected_loss(net: nn.Module, norm: SceneNormalisation, score_net: ScoreCNN | None, data: TrainingFrames,
                       config: DSACConfig, indices=None, seed: int = 0, device: str = "cpu") -> float:
    """Mean over frames ``indices`` (default all) of the exact expected pose loss ``sum_J P(J) l_J``,
    with hypotheses drawn from ``[seed, frame]``: equal inputs give equal numbers, so two networks
    are compared on the same draws."""
    config = replace(config, objective="expected")
    values = []
    with torch.no_grad():
        for i in range(len(data)) if indices is None else indices:
            m = data.matches(i, _predict(net, norm, _image(data, i).to(device)), config.mode)
            out = frame_objective(m, torch.as_tensor(data.poses[i], device=m.scene.device), config, score_net,
                                  np.random.default_rng([seed, int(i)]))
            if out is not None:
                values.append(out[1])
    return float(np.mean(values)) if values else float("nan")


def train_dsac(net: nn.Module, norm: SceneNormalisation, score_net: ScoreCNN | None, data: TrainingFrames,
               config: DSACConfig, device: str = "cpu") -> dict:
    """Fine-tune ``net`` (and ``score_net``) end to end on ``frame_objective``, one image per step,
    until ``config.iterations`` or ``config.minutes``. Returns steps, seconds, skips and history."""
    net.to(device).eval()  # frozen BatchNorm statistics: one image per step would corrupt them
    groups = [{"params": list(net.parameters()), "lr": config.lr_coordinates}]
    if score_net is not None:
        score_net.to(device).train()
        groups.append({"params": list(score_net.parameters()), "lr": config.lr_score})
    opt = torch.optim.Adam(groups)
    photometric = MappingConfig(aug_scale=1.0, aug_rotation=0.0, aug_brightness=config.aug_brightness,
                                aug_contrast=config.aug_contrast)
    rng = np.random.default_rng(config.seed)
    total, budget = config.iterations, config.minutes * 60.0
    bar = progress_bar(total=total if total else int(budget), desc="DSAC fine-tuning", unit="it" if total else "s",
               dynamic_ncols=True, mininterval=1.0)
    order, pos = rng.permutation(len(data)), 0
    steps, skipped, elapsed, running, history = 0, 0, 0.0, None, []
    t_prev = time.perf_counter()
    while ((steps + skipped) < total) if total else (elapsed < budget):
        if pos == len(order):
            order, pos = rng.permutation(len(data)), 0
        i = int(order[pos])
        pos += 1
        image = make_batch(data.cache, np.array([i]), photometric, rng, train=True)[0].to(device)
        m = data.matches(i, _predict(net, norm, image), config.mode)
        out = frame_objective(m, torch.as_tensor(data.poses[i], device=m.scene.device), config, score_net, rng)
        ok = out is not None and bool(torch.isfinite(out[0]))
        if ok:
            opt.zero_grad(set_to_none=True)
            out[0].backward()
            norms = [torch.nn.utils.clip_grad_norm_(g["params"], config.grad_clip) for g in groups]
            ok = all(bool(torch.isfinite(n)) for n in norms)  # a degenerate solve: skip, do not poison Adam
        if ok:
            opt.step()
            steps += 1
            running = out[1] if running is None else 0.95 * running + 0.05 * out[1]
        else:
            skipped += 1
        now = time.perf_counter()
        elapsed += now - t_prev
        t_prev = now
        if ok and steps % 10 == 0:
            history.append((round(elapsed, 1), steps, round(running, 4)))
        if running is not None:
            bar.set_postfix(expected_loss=f"{running:.2f}", refresh=False)
        bar.update((steps + skipped if total else min(int(elapsed), int(budget))) - bar.n)
    bar.close()
    net.eval()
    if score_net is not None:
        score_net.eval()
    return {"steps": steps, "skipped": skipped, "seconds": round(elapsed, 1), "history": history}


def finetune_dsac(dataset: str | Path, map_dir: str | Path, config: DSACConfig = DSACConfig(), force: bool = False,
                  device: str | None = None, intrinsics: np.ndarray | None = None, log=print) -> dict:
    """``sceneloc map DATASET MAP_DIR --stage dsac``: fine-tune the map's coordinate network (and a
    Score CNN) end to end on the dataset's train split; write the stage beside the base map.

    The base map (``coordinates.pt``) is never modified. Returns the report, also written to
    ``dsac_report.json``, with the expected pose loss on up to ``config.eval_frames`` training
    frames before and after.
    """
    map_dir = Path(map_dir)
    the_map = Map.load(map_dir, device=device)
    existing = [name for name in STAGE_FILES if (map_dir / name).exists()]
    if existing and not force:
        raise SceneLocError(f"{map_dir / existing[0]}: exists (use --force to overwrite the DSAC stage)")
    seed_everything(config.seed)
    frames = load_scene(dataset, intrinsics).frames("train")
    missing = [f for f in frames if f.depth_path is None]
    if missing:
        raise SceneLocError(f"{missing[0].image_path}: missing depth (fine-tuning caches depth for every training frame)")
    device = the_map.device
    net = copy.deepcopy(the_map.coord_net)
    score_net = ScoreCNN(config.score_width, config.beta) if config.score == "cnn" else None
    data = TrainingFrames.build(frames, the_map.config["input_height"], net)
    log(f"DSAC fine-tuning ({config.mode}, score {config.score}, {config.objective} loss, {config.hypotheses} "
        f"hypotheses) on {len(frames)} training frames, {data.pixels.shape[0]}x{data.pixels.shape[1]} cells each")
    probe = np.linspace(0, len(data) - 1, min(config.eval_frames, len(data))).round().astype(int)
    if score_net is not None:
        score_net.to(device)
    before = mean_expected_loss(net, the_map.norm, score_net, data, config, probe, config.seed, device)
    report = train_dsac(net, the_map.norm, score_net, data, config, device)
    after = mean_expected_loss(net, the_map.norm, score_net, data, config, probe, config.seed, device)
    report.update(initial_expected_loss=before, final_expected_loss=after, frames_evaluated=len(probe))

    for name in STAGE_FILES:  # a stage is complete only when dsac_config.json, written last, exists
        (map_dir / name).unlink(missing_ok=True)
    torch.save(net.state_dict(), map_dir / "coordinates_dsac.pt")
    if score_net is not None:
        torch.save(score_net.state_dict(), map_dir / "score.pt")
    (map_dir / "dsac_report.json").write_text(json.dumps(report, indent=2))
    (map_dir / "dsac_config.json").write_text(json.dumps(asdict(config), indent=2))
    log(f"expected pose loss on {len(probe)} training frames: {before:.2f} -> {after:.2f} "
        f"({report['steps']} steps, {report['seconds']:.0f} s); DSAC stage written to {map_dir}")
    return report
