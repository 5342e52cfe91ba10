"""Train the per-pixel head of an :class:`~sceneloc.nets.models.EncoderHeadNet` on a training buffer (ACE).

Batches are shuffled buffer entries from all mapping images. The loss is the Euclidean distance
between predicted and ground-truth scene coordinates (metres), clamped so that a few wild targets
(depth edges, misregistered depth) cannot dominate; ``euclidean+reprojection`` adds ACE's
tanh-robust reprojection error in the mapping frame, which sharpens the 2D-3D geometry that PnP
uses, while the depth term keeps points from drifting along their rays.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from sceneloc.errors import SceneLocError
from sceneloc.nets.encoders import use_bf16
from sceneloc.nets.losses import INLIER_THRESHOLD_M
from sceneloc.nets.models import EncoderHeadNet, SceneNormalisation
from sceneloc.training.buffer import PixelBuffer
from sceneloc.training.loop import Budget, lr_factor, resume_from, save_checkpoint

LOSSES = ("euclidean", "euclidean+reprojection")
EUCLIDEAN_CLAMP_M = 5.0   # beyond this error a target is likely an outlier (depth edge, misregistration)
#: Metres one pixel of (robust) reprojection error weighs against the Euclidean error: at 2 m
#: depth and f = 525 px, 1 px is 3.8 mm of lateral error.
REPROJECTION_WEIGHT_M_PER_PX = 0.005
PRIOR_DEPTH_M = 3.0       # ACE pulls invalid predictions to a point on the ray (10 m there; indoor scenes here)


def reprojection_error(X_w: torch.Tensor, T_cw: torch.Tensor, K: torch.Tensor, uv: torch.Tensor,
                       min_depth: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel distance ``(N,)`` between the projection of world points ``X_w (N, 3)`` into cameras
    ``T_cw (N, 3, 4)``, ``K (N, 3, 3)`` and pixels ``uv (N, 2)``, and whether each point is in front
    (depth > ``min_depth`` metres)."""
    X_c = torch.einsum("nij,nj->ni", T_cw[:, :, :3], X_w) + T_cw[:, :, 3]
    z = X_c[:, 2]
    front = z > min_depth
    p = torch.einsum("nij,nj->ni", K, X_c)
    proj = p[:, :2] / z.clamp(min=min_depth).unsqueeze(1)
    return torch.linalg.vector_norm(proj - uv, dim=1), front


def head_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, buffer: PixelBuffer | None,
              idx: torch.Tensor | None, fraction: float, reprojection_weight: float = REPROJECTION_WEIGHT_M_PER_PX,
              max_px: float = 50.0, min_px: float = 1.0, prior_depth_m: float = PRIOR_DEPTH_M) -> torch.Tensor:
    """Mean loss over a batch: ``pred``/``target`` ``(B, 3)`` metres; ``idx`` the batch's buffer entries.

    Entries with a target (depth) get the Euclidean distance; with ``euclidean+reprojection`` also
    the reprojection term. Entries without one (NaN target: RGB-only frames) always get ACE's
    reprojection loss: ``tau * tanh(px / tau)`` in pixels, the threshold ``tau`` shrinking from
    ``max_px`` to ``min_px`` over training, where the prediction is *valid* (in front of the camera,
    closer than 1 km, within 1000 px); an invalid one is pulled in metres towards the point on its
    pixel's ray at ``prior_depth_m`` (ACE's constraint), so that it becomes valid.
    """
    if kind not in LOSSES:
        raise SceneLocError(f"unknown head loss {kind!r} (choose {', '.join(LOSSES)})")
    has_target = torch.isfinite(target[:, 0])
    err = torch.linalg.vector_norm(pred - torch.nan_to_num(target), dim=1)
    # Beyond the clamp the loss grows as a square root: outliers weigh less, yet a prediction that
    # ran far away still gets pulled back (a hard clamp leaves it with no gradient at all).
    euclid = torch.where(err < EUCLIDEAN_CLAMP_M, err, (EUCLIDEAN_CLAMP_M * err.clamp(min=EUCLIDEAN_CLAMP_M)).sqrt())
    loss = torch.where(has_target, euclid, torch.zeros_like(euclid))
    reproject = ~has_target if kind == "euclidean" else torch.ones_like(has_target)
    if not reproject.any():
        return loss.mean()
    if buffer is None or idx is None:
        raise ValueError("the reprojection loss needs the batch's buffer entries (buffer and idx)")
    f = buffer.frames[idx].long()
    T_cw, K, uv = buffer.T_cw[f].to(pred.device), buffer.K[f].to(pred.device), buffer.pixels[idx].to(pred.device)
    px, front = reprojection_error(pred, T_cw, K, uv)
    tau = max_px * (1 - min(fraction, 1.0)) ** 0.5 + min_px   # ACE's sqrt schedule
    valid = front & (px < 1000.0) & (_camera_depth(pred, T_cw) < 1000.0)
    robust = tau * torch.tanh(px / tau)
    # the point at prior_depth_m on the pixel's ray, in world coordinates
    ray = torch.einsum("nij,nj->ni", torch.linalg.inv(K), torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1))
    X_c = ray * prior_depth_m
    R_cw, t_cw = T_cw[:, :, :3], T_cw[:, :, 3]
    X_prior = torch.einsum("nji,nj->ni", R_cw, X_c - t_cw)
    pull = torch.linalg.vector_norm(pred - X_prior, dim=1)
    reproj = torch.where(valid, robust * reprojection_weight, pull)
    # with a depth target the reprojection term only sharpens: an invalid prediction is left to the Euclidean term
    reproj = torch.where(has_target, torch.where(valid, reproj, torch.zeros_like(reproj)), reproj)
    return (loss + torch.where(reproject, reproj, torch.zeros_like(reproj))).mean()


def _camera_depth(X_w: torch.Tensor, T_cw: torch.Tensor) -> torch.Tensor:
    """Camera-frame depth ``(N,)`` of world points ``X_w (N, 3)`` in cameras ``T_cw (N, 3, 4)``."""
    return (torch.einsum("nj,nj->n", T_cw[:, 2, :3], X_w) + T_cw[:, 2, 3])


def train_head(net: EncoderHeadNet, norm: SceneNormalisation, buffer: PixelBuffer, minutes: float | None,
               iterations: int | None, batch: int = 4096, lr: float = 3e-3, schedule: str = "cosine", *,
               loss: str = "euclidean", seed: int = 0, checkpoint: Path | None = None, resume: bool = False,
               checkpoint_minutes: float = 2.0, precision: str = "auto", device: str = "cpu",
               entries: torch.Tensor | None = None, desc: str = "training head",
               average_from: float = 1.0) -> Budget:
    """Fit ``net.head`` to ``buffer`` under a time or step budget; returns the finished :class:`Budget`
    (steps, seconds, history). Checkpoints hold the head, optimiser, step, time and random state.
    ``entries`` (indices into the buffer) restricts training to those entries. From
    ``average_from`` (a share of the budget; 1 = never) the head's weights are averaged over the
    remaining steps and the average is the result (stochastic weight averaging, Izmailov et al. 2018).

    In bf16 (``nets.encoders.use_bf16``) the hidden layers run under a bfloat16 autocast (weights,
    optimiser and the output layer stay fp32): 1.9x the steps per minute on this project's 2-core
    AVX-512 machine, and a lower test error at equal time (BENCHMARKS.md, head ablation)."""
    device_type = torch.device(device).type
    bf16 = use_bf16(precision, device_type)
    head = net.head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    if resume:
        budget, ck = resume_from(checkpoint, device, desc, minutes, iterations, head=head, optimizer=opt)
        gen.set_state(ck["generator"])
    else:
        budget = Budget(desc, minutes, iterations)
    average = WeightAverage(head)
    n = len(buffer) if entries is None else len(entries)
    center = torch.as_tensor(norm.center, dtype=torch.float32, device=device)
    last_ck = time.perf_counter()
    while not budget.done:
        idx = torch.randint(n, (min(batch, n),), generator=gen)
        if entries is not None:
            idx = entries[idx]
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(schedule, budget.fraction)
        x = buffer.features[idx].to(device).float()
        target = buffer.targets[idx].to(device)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            pred = center + norm.scale * head(x)
        value = head_loss(loss, pred, target, buffer, idx, budget.fraction)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if budget.fraction >= average_from:
            average.add()
        with torch.no_grad():
            within = (torch.linalg.vector_norm(pred - target, dim=1) < INLIER_THRESHOLD_M).float().mean().item()
        budget.tick(loss=value.item(), within10cm=within)
        if checkpoint is not None and time.perf_counter() - last_ck > checkpoint_minutes * 60:
            with budget.paused():
                _save(checkpoint, head, opt, budget, gen)
            last_ck = time.perf_counter()
    budget.close()
    average.apply()   # before the final checkpoint, so a --resume after the end continues from the result
    if checkpoint is not None:
        _save(checkpoint, head, opt, budget, gen)
    head.eval()
    return budget


class WeightAverage:
    """Running mean of a module's parameters over the steps ``add`` is called at."""

    def __init__(self, module: torch.nn.Module):
        self.params = list(module.parameters())
        self.mean: list[torch.Tensor] = []
        self.count = 0

    @torch.no_grad()
    def add(self) -> None:
        self.count += 1
        if self.count == 1:
            self.mean = [p.detach().clone() for p in self.params]
            return
        for m, p in zip(self.mean, self.params, strict=True):
            m.add_(p.detach() - m, alpha=1.0 / self.count)

    @torch.no_grad()
    def apply(self) -> None:
        """Copy the mean into the module (nothing when ``add`` was never called)."""
        if not self.count:
            return
        for m, p in zip(self.mean, self.params, strict=True):
            p.copy_(m)


def _save(path: Path, head: torch.nn.Module, opt: torch.optim.Optimizer, budget: Budget, gen: torch.Generator) -> None:
    save_checkpoint(path, {"head": head.state_dict(), "optimizer": opt.state_dict(), "step": budget.step,
                           "elapsed": budget.elapsed, "history": budget.history, "generator": gen.get_state()})


def buffer_accuracy(net: EncoderHeadNet, norm: SceneNormalisation, buffer: PixelBuffer, samples: int = 50000,
                    device: str = "cpu") -> dict:
    """Median error (m) and share within 10 cm of the head on a random sample of buffer entries
    (those with a depth target; NaN when there is none)."""
    idx = torch.from_numpy(np.random.default_rng(0).choice(len(buffer), min(samples, len(buffer)), replace=False))
    with torch.no_grad():
        center = torch.as_tensor(norm.center, device=device)
        pred = norm.scale * net.head(buffer.features[idx].to(device).float()) + center
    err = torch.linalg.vector_norm(pred.cpu() - buffer.targets[idx], dim=1).numpy()
    err = err[np.isfinite(err)]  # entries of frames without depth have no target
    if err.size == 0:
        return {"median_error_m": float("nan"), "within_10cm": float("nan")}
    return {"median_error_m": float(np.median(err)), "within_10cm": float((err < INLIER_THRESHOLD_M).mean())}
