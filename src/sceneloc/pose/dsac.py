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

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from sceneloc.geometry import invert_pose, kabsch, make_pose, solve_pnp
from sceneloc.pose.config import DSAC_SCORES, MODES
from sceneloc.pose.estimate import MIN_POINTS, PoseResult, accepted_pose, failed_pose, sample_subsets, spans_a_plane

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
        for name, allowed in (("mode", MODES), ("score", DSAC_SCORES), ("objective", OBJECTIVES), ("loss", LOSSES)):
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

    @property
    def camera_points(self) -> torch.Tensor:
        """``camera``, for the Kabsch code paths (the solver is ``kabsch`` exactly when it is set)."""
        if self.camera is None:
            raise ValueError("Kabsch needs camera points (the query's depth)")
        return self.camera


def make_matches(pixels, scene, K, grid_hw: tuple[int, ...], camera=None) -> Matches:
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
    return Matches(pixels, scene, torch.as_tensor(K, **f64), camera, valid, (int(grid_hw[0]), int(grid_hw[1])))


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
    R, t = kabsch(m.camera_points[sets], m.scene[sets])
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


def solve_minimal_sets(m: Matches, sets: np.ndarray, pnp_steps: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """Hypotheses ``(B', 4, 4)`` of the minimal sets ``(B, k)`` that determine a pose, and those sets.

    Coincident or collinear sets are dropped first: they leave the pose undetermined and their
    SVD / normal equations have no finite gradient.
    """
    scene = m.scene.detach().cpu().numpy()
    ok = np.array([spans_a_plane(scene[s]) for s in sets], dtype=bool)
    if m.solver == "kabsch":
        camera = m.camera_points.cpu().numpy()
        ok &= np.array([spans_a_plane(camera[s]) for s in sets], dtype=bool)
        sets = sets[ok]
        return (kabsch_hypotheses(m, sets) if len(sets) else m.scene.new_zeros((0, 4, 4))), sets
    return pnp_hypotheses(m, sets[ok], pnp_steps)


# ------------------------------------------------------------------------------------- scoring


def hypothesis_errors(poses: torch.Tensor, m: Matches) -> torch.Tensor:
    """Errors ``(B, N)`` of poses ``(B, 4, 4)`` on every grid cell: reprojection error in pixels (PnP)
    or 3D distance in metres (Kabsch); ``inf`` for invalid cells and points behind the camera."""
    if m.solver == "kabsch":
        X = m.camera_points @ poses[:, :3, :3].transpose(-1, -2) + poses[:, None, :3, 3]
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


def hypothesis_scores(errors: torch.Tensor, m: Matches, config: DSACConfig,
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
            R, t = kabsch(m.camera_points.expand(n, -1, -1), m.scene.expand(n, -1, -1), w[fit])
            new = make_pose(R, t)
        else:
            new = refine_pnp_gauss_newton(poses[fit], m.scene, m.pixels, m.K, w[fit], steps)
        poses = poses.index_put((fit,), new)
    return poses


def refine(poses: torch.Tensor, m: Matches, config: DSACConfig) -> torch.Tensor:
    """:func:`refine_on_inliers` with the options of ``config``."""
    return refine_on_inliers(poses, m, config.threshold(m.solver), config.refine_rounds, config.refine_beta,
                             config.refine_steps)


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
        :class:`sceneloc.pose.estimate.PoseResult`; ``used`` are the final pose's inliers, ``score`` the
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
        poses, sets = solve_minimal_sets(m, sets, config.hypothesis_steps)
        if len(poses) == 0:
            return failed_pose("no hypothesis could be solved", timings)
        scores = hypothesis_scores(hypothesis_errors(poses, m), m, config, score_net)
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
    return accepted_pose(pose.numpy(), inliers, m.scene.numpy(), min_inliers, m.solver, inliers, score, timings)
