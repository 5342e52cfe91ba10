"""DSAC end-to-end training (``sceneloc map --stage dsac``): fine-tune a map's coordinate network (and a
Score CNN) through differentiable RANSAC on the expected pose loss; the stage is written beside the map."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sceneloc.data.dataset import evenly_spaced, load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import backproject, rotation_error_deg
from sceneloc.mapping.scene_map import DEFAULT_POSE_POINTS, Map, grid_step
from sceneloc.nets.models import CoordinateNetwork, SceneNormalisation, output_pixel_centres
from sceneloc.pose.dsac import (
    LOSSES,
    STAGE_FILES,
    DSACConfig,
    Matches,
    ScoreCNN,
    hypothesis_errors,
    hypothesis_scores,
    make_matches,
    refine,
    sample_minimal_sets,
    solve_minimal_sets,
)
from sceneloc.training.frame_cache import Augmentation, FrameCache, make_batch
from sceneloc.training.loop import Budget
from sceneloc.training.trainers import seed_everything
from sceneloc.validation import check_config_budgets

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
    detached = losses.detach()
    baseline = (detached.sum() - detached) / (S - 1) if S > 1 else torch.zeros_like(detached)
    return ((detached - baseline) * log_probs + losses).mean()


def frame_objective(m: Matches, T_gt: torch.Tensor, config: DSACConfig, score_net: ScoreCNN | None,
                    rng: np.random.Generator) -> tuple[torch.Tensor, float] | None:
    """End-to-end objective of one image: ``(tensor to minimise, expected pose loss)``, or None when
    no hypothesis could be solved.

    ``objective='expected'`` refines every hypothesis and returns ``sum_J P(J) l_J`` (both items
    the same number); ``'sampled'`` refines only ``config.samples`` draws ``J ~ P`` and returns the
    REINFORCE surrogate with the draws' mean loss.
    """
    sets = sample_minimal_sets(m.valid.cpu().numpy(), config.hypotheses, m.solver, rng)
    poses, sets = solve_minimal_sets(m, sets, config.hypothesis_steps)
    if len(poses) == 0:
        return None
    log_p = torch.log_softmax(config.alpha * hypothesis_scores(hypothesis_errors(poses, m), m, config, score_net), -1)
    if config.objective == "expected":
        losses = pose_loss(refine(poses, m, config), T_gt, config.loss, config.loss_clamp)
        loss = expected_pose_loss(losses, log_p.exp())
        return loss, loss.item()
    drawn = rng.choice(len(poses), size=config.samples, p=log_p.detach().exp().cpu().numpy())
    unique, inverse = np.unique(drawn, return_inverse=True)
    losses = pose_loss(refine(poses[unique], m, config), T_gt, config.loss, config.loss_clamp)[inverse]
    return sampled_pose_loss(losses, log_p[drawn]), losses.mean().item()


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
    def build(cls, frames: list, input_height: int, net: CoordinateNetwork) -> TrainingFrames:
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
    groups: list[dict[str, Any]] = [{"params": list(net.parameters()), "lr": config.lr_coordinates}]
    if score_net is not None:
        score_net.to(device).train()
        groups.append({"params": list(score_net.parameters()), "lr": config.lr_score})
    opt = torch.optim.Adam(groups)
    photometric = Augmentation(brightness=config.aug_brightness, contrast=config.aug_contrast)
    rng = np.random.default_rng(config.seed)
    budget = Budget("DSAC fine-tuning", config.minutes, config.iterations)
    order, pos = rng.permutation(len(data)), 0
    skipped = 0
    while not budget.done:
        if pos == len(order):
            order, pos = rng.permutation(len(data)), 0
        i = int(order[pos])
        pos += 1
        image = make_batch(data.cache, np.array([i]), photometric, rng)[0].to(device)
        m = data.matches(i, _predict(net, norm, image), config.mode)
        out = frame_objective(m, torch.as_tensor(data.poses[i], device=m.scene.device), config, score_net, rng)
        ok = False
        if out is not None and bool(torch.isfinite(out[0])):
            opt.zero_grad(set_to_none=True)
            out[0].backward()
            norms = [torch.nn.utils.clip_grad_norm_(g["params"], config.grad_clip) for g in groups]
            ok = all(bool(torch.isfinite(n)) for n in norms)  # a degenerate solve: skip, do not poison Adam
        if ok and out is not None:
            opt.step()
            budget.tick(expected_loss=out[1])
        else:  # a skipped frame spends the budget too (and counts against --iterations, as before)
            skipped += 1
            budget.tick()
    budget.close()
    net.eval()
    if score_net is not None:
        score_net.eval()
    return {"steps": budget.step - skipped, "skipped": skipped, "seconds": round(budget.elapsed, 1),
            "history": budget.history}


def finetune_dsac(dataset: str | Path, map_dir: str | Path, config: DSACConfig = DSACConfig(), force: bool = False,
                  device: str | None = None, intrinsics: np.ndarray | None = None, log=print) -> dict:
    """``sceneloc map DATASET MAP_DIR --stage dsac``: fine-tune the map's coordinate network (and a
    Score CNN) end to end on the dataset's train split; write the stage beside the base map.

    The base map (``coordinates.pt``) is never modified. Returns the report, also written to
    ``dsac_report.json``, with the expected pose loss on up to ``config.eval_frames`` training
    frames before and after.
    """
    map_dir = Path(map_dir)
    check_config_budgets(config)
    the_map = Map.load(map_dir, device=device)
    existing = [name for name in STAGE_FILES if (map_dir / name).exists()]
    if existing and not force:
        raise SceneLocError(f"{map_dir / existing[0]}: exists (use --force to overwrite the DSAC stage)")
    seed_everything(config.seed)
    frames = load_scene(dataset, intrinsics).frames("train")
    missing = [f for f in frames if f.depth_path is None]
    if missing:
        raise SceneLocError(f"{missing[0].image_path}: missing depth "
                            f"(fine-tuning caches depth for every training frame)")
    device = the_map.device
    net = copy.deepcopy(the_map.coord_net)
    score_net = ScoreCNN(config.score_width, config.beta) if config.score == "cnn" else None
    data = TrainingFrames.build(frames, the_map.config["input_height"], net)
    log(f"DSAC fine-tuning ({config.mode}, score {config.score}, {config.objective} loss, {config.hypotheses} "
        f"hypotheses) on {len(frames)} training frames, {data.pixels.shape[0]}x{data.pixels.shape[1]} cells each")
    probe = evenly_spaced(len(data), config.eval_frames)
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
