"""Mapping: learn a scene's coordinate regressor (stage 1) and correspondence confidences (stage 2).

Stage 1 (paper III-A): a network maps an image to scene coordinates, trained against ground truth
from depth and pose with ``l1``, ``tukey`` or ``tukey+smooth`` (nets/losses.py). Every training frame is
decoded and resampled once into a :class:`FrameCache`; augmentation (photometric, and scale plus
in-plane rotation applied identically to image and target coordinates) runs on the cached arrays.
Training stops at a wall-clock budget (``minutes``) or after ``iterations``; checkpoints are written
every few minutes and ``resume`` continues from the last one.

Stage 2 (paper III-B): a PointNet learns delta = exp(-s ||X - X_hat||) of the stage-1 predictions.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sceneloc.errors import SceneLocError
from sceneloc.nets.encoders import encoder_identity
from sceneloc.nets.losses import CONFIDENCE_SCALE, INLIER_THRESHOLD_M, confidence_target, coordinate_loss
from sceneloc.nets.models import (
    ConfidencePointNet,
    SceneNormalisation,
    confidence_inputs,
    output_pixel_centres,
)
from sceneloc.training.frame_cache import Augmentation, FrameCache, make_batch
from sceneloc.training.loop import Budget, lr_factor, resume_from
from sceneloc.training.loop import save_checkpoint as save_checkpoint_file

#: Defaults that depend on the architecture (a ``None`` field of MappingConfig takes these).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    # Frozen XFeat encoder + per-pixel head trained from a buffer (ACE's design): full-resolution
    # input (the encoder was trained on it), AdamW at ACE's order of learning rate, a few minutes
    # (docs/decisions/encoder.md, head-and-buffer.md, head-minutes.md).
    "xfeat": {"input_height": 480, "lr": 5e-3, "optimizer": "adamw", "minutes": 2.25, "aug_scale": 1.5,
              "confidence_minutes": 0.25},
    # DSAC*/ACE-style stride-8 FCN, learned from scratch: it learns faster per CPU-minute than the
    # paper's U-Net, at a quarter of the input pixels (docs/decisions/fcn-training.md).
    "fcn": {"input_height": 240, "lr": 5e-4, "optimizer": "rmsprop", "minutes": 16.0, "aug_scale": 1.25,
            "confidence_minutes": 2.0},
    "unet": {"input_height": 240, "lr": 5e-4, "optimizer": "rmsprop", "minutes": 16.0, "aug_scale": 1.25,
             "confidence_minutes": 2.0},
}


#: Base channel width of the from-scratch networks when ``MappingConfig.width`` is None.
DEFAULT_WIDTH = {"fcn": 32, "unet": 16}
OPTIMIZERS = ("rmsprop", "adamw")
#: Stage 2: the regressor (paper III-B), the inlier classifier, or both (Fig. 3's ROC comparison).
CONFIDENCE_MODES = ("regression", "classification", "both")


@dataclass
class MappingConfig:
    """Every option of ``sceneloc map``. The defaults are what measured best on real data (one line each
    in docs/defaults.md, the measurements in docs/decisions/); the paper's network and loss are one flag
    away (``arch="unet"``, ``loss="tukey+smooth"``). ``None`` fields take their architecture's value from
    ARCH_DEFAULTS (see ``resolved``). Units are in the names: ``_mb`` megabytes, ``_deg`` degrees, ``_m``
    metres, ``minutes``; 0 turns a stage or an augmentation off where the comment says so."""
    # A frozen pretrained encoder and a head trained on a pixel buffer (ACE) by default: it maps in
    # minutes (docs/decisions/encoder.md); ``fcn`` and the paper's ``unet`` learn the whole network
    # per scene.
    arch: str = "xfeat"
    # xfeat: encoder and head
    encoder: str = "xfeat"
    # head channels and residual blocks; loss "euclidean" to the depth target, or "+reprojection"
    # (docs/decisions/head-and-buffer.md)
    head_width: int = 256
    head_blocks: int = 2
    head_loss: str = "euclidean"
    buffer_mb: float = 1536.0         # training buffer of fp16 features, megabytes (head-and-buffer.md)
    buffer_copies: int = 3            # views of each mapping image in the buffer: 1 as it is + the rest augmented
    pixel_batch: int = 1024           # buffer entries per head step (head-and-buffer.md)
    precision: str = "auto"           # auto: encoder and head in bf16 where the hardware has it (precision.md)
    # fcn / unet
    width: int | None = None          # base channels; None: DEFAULT_WIDTH of the architecture
    stride: int = 8                   # fcn output stride (DSAC*/ACE: 8)
    stem: str = "strided"             # fcn first layer: 'strided' (fast on CPU) or 'full' (DSAC*)
    blocks: int = 1                   # fcn residual blocks at the output stride (fcn-training.md)
    input_height: int | None = None   # network input rows, pixels; None: ARCH_DEFAULTS
    # fcn/unet: l1, not the paper's tukey+smooth: with c = half the scene diameter Tukey is ~l2 for
    # errors of decimetres, whose gradient fades as they shrink (docs/decisions/fcn-training.md).
    loss: str = "l1"
    tukey_c: float | None = None      # None: half the scene diameter (paper)
    smooth_weight: float = 1.0
    neighbourhood: int = 8
    optimizer: str | None = None      # fcn/unet: the paper's rmsprop; the xfeat head always uses adamw
    lr: float | None = None           # fcn/unet: the paper's 5e-4
    schedule: str = "cosine"          # decay over the budget; 'constant' = the paper
    batch_size: int = 8               # fcn/unet images per step (paper: 20; fcn-training.md)
    minutes: float | None = None      # training budget of stage 1 (the head for xfeat); head-minutes.md
    iterations: int | None = None     # exact step count instead of a time budget (repeatable runs)
    aug_scale: float | None = None    # random zoom in [1/a, a]; 1 = off
    aug_rotation_deg: float = 15.0        # random in-plane rotation in [-r, r] degrees; 0 = off
    aug_brightness: float = 0.2       # random brightness shift in [-b, b] of images in [0, 1]; 0 = off
    aug_contrast: float = 0.2         # random contrast factor in [1 - c, 1 + c]; 0 = off
    # xfeat: this many of the augmented buffer copies are the image rendered from a camera orbited by up
    # to aug_orbit_deg degrees about the scene ahead, with its depth (buffer.novel_view); 0 = off
    # (docs/decisions/novel-views.md)
    aug_novel_views: int = 0
    aug_orbit_deg: float = 5.0
    checkpoint_minutes: float = 2.0
    snapshot_minutes: tuple[float, ...] = ()  # also save the weights at these training minutes (snapshots/)
    seed: int = 0
    # xfeat: a second head trained this long without one recording (or a third) of the frames
    # localizes them, to fit each pose's probability of being within 5 cm / 5 deg (pose/calibration.py); 0: none
    # (docs/decisions/pose-calibration.md)
    calibration_minutes: float = 0.5
    # the surface fused from the mapping depth at this voxel size (metres), which RGB-D poses are
    # finally aligned to by ICP (surface/cloud.py, PoseConfig.icp_distances_m); 0: none (scene-surface.md)
    cloud_voxel_m: float = 0.02
    # the mapping frames' depth and grey values fused at this voxel size (metres), which RGB poses are
    # finally aligned to by rendering it (surface/view.py, PoseConfig.view_rounds); 0: none (view-alignment.md)
    view_voxel_m: float = 0.01
    # pose length units per metre of the mapping depth: depth is multiplied by it before it meets the poses,
    # and every RGB-D query's depth too (a depth camera's metre against an SfM model's unit); 1 = depth is in
    # pose units (docs/decisions/depth-to-pose-scale.md)
    depth_to_pose_scale: float = 1.0
    # the camera the mapping poses belong to: "depth" (a depth tracker's such as KinectFusion, 7-Scenes'
    # pose.txt), whose RGB-D poses come from the depth; "colour" (SfM, COLMAP, visual SLAM), whose RGB-D
    # poses are the image's, started from the depth's: the depth camera sits centimetres beside the colour
    # camera; None: what the dataset's pose-camera.txt says, else "depth" (docs/decisions/pose-camera.md)
    pose_camera: str | None = None
    # stage 2
    confidence: bool = True
    confidence_mode: str = "regression"   # or classification, or both (classifier kept for Fig. 3's ROC)
    confidence_minutes: float | None = None  # stage 2's budget; None: ARCH_DEFAULTS (confidence-stage.md)
    confidence_blocks: int = 0           # context-normalised residual blocks of the PointNet (Yi et al.); 0 = plain
    n_k: int = 500
    confidence_scale: float = CONFIDENCE_SCALE

    def resolved(self) -> MappingConfig:
        """A copy with every ``None`` architecture default filled in."""
        if self.arch not in ARCH_DEFAULTS:
            raise SceneLocError(f"unknown architecture {self.arch!r} (choose {', '.join(ARCH_DEFAULTS)})")
        fill = {k: v for k, v in ARCH_DEFAULTS[self.arch].items() if getattr(self, k) is None}
        return replace(self, **fill)

    def augmentation(self) -> Augmentation:
        """The batch augmentation of stage 1 and stage 2 (needs a ``resolved`` config)."""
        if self.aug_scale is None:
            raise ValueError("MappingConfig.augmentation needs a resolved config (aug_scale is None)")
        return Augmentation(self.aug_scale, self.aug_rotation_deg, self.aug_brightness, self.aug_contrast)

    def network_config(self) -> dict:
        if self.arch == "xfeat":
            return {"arch": "xfeat", "encoder": self.encoder, "head_width": self.head_width,
                    "head_blocks": self.head_blocks, "encoder_sha256": encoder_identity(self.encoder)["weights_sha256"]}
        if self.arch not in DEFAULT_WIDTH:
            raise SceneLocError(f"unknown architecture {self.arch!r} (choose {', '.join(ARCH_DEFAULTS)})")
        net = {"arch": self.arch, "width": self.width or DEFAULT_WIDTH[self.arch]}
        if self.arch == "fcn":
            net.update(stride=self.stride, stem=self.stem, blocks=self.blocks)
        return net


# -------------------------------------------------------------------------------------- training


def _make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-6)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    raise ValueError(f"unknown optimizer {name!r} (choose {', '.join(OPTIMIZERS)})")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_coordinates(model: torch.nn.Module, norm: SceneNormalisation, cache: FrameCache, cfg: MappingConfig,
                      tukey_c: float, checkpoint: Path | None = None, resume: bool = False,
                      device: str = "cpu") -> Budget:
    """Stage 1: fit ``model`` to the cached frames until the time budget or iteration count is reached;
    returns the finished :class:`~sceneloc.training.loop.Budget` (steps, seconds, history)."""
    cfg = cfg.resolved()
    assert cfg.optimizer is not None and cfg.lr is not None and cfg.minutes is not None  # resolved() filled them
    model.to(device).train()
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # the stubs omit memory_format
    opt = _make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    if resume:
        budget, ck = resume_from(checkpoint, device, "mapping", cfg.minutes, cfg.iterations, model=model,
                                 optimizer=opt)
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        order, pos = ck["order"], ck["pos"]
    else:
        order, pos = rng.permutation(len(cache)), 0
        budget = Budget("mapping", cfg.minutes, cfg.iterations)
    snapshots = sorted(m for m in cfg.snapshot_minutes if m * 60 > budget.elapsed) if checkpoint is not None else []
    last_ck = time.perf_counter()
    aug = cfg.augmentation()
    while not budget.done:
        if pos + cfg.batch_size > len(order):
            order, pos = rng.permutation(len(cache)), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        image, target, mask, depth = make_batch(cache, idx, aug, rng)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg.schedule, budget.fraction)
        # contiguous: the losses' elementwise work is several times slower on channels-last tensors
        pred = norm.to_metres(model(image.to(device))).float().contiguous()
        target, mask, depth = target.to(device), mask.to(device), depth.to(device)
        loss = coordinate_loss(cfg.loss, pred, target, mask, depth, c=tukey_c,
                               smooth_weight=cfg.smooth_weight, neighbourhood=cfg.neighbourhood)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            err = torch.linalg.vector_norm(pred - target, dim=1)[mask]
            in10 = (err < INLIER_THRESHOLD_M).float().mean().item() if err.numel() else 0.0
        budget.tick(loss=loss.item(), within10cm=in10)
        while snapshots and checkpoint is not None and budget.elapsed >= snapshots[0] * 60:
            with budget.paused():
                _save_snapshot(checkpoint, model, snapshots.pop(0))
        if checkpoint is not None and time.perf_counter() - last_ck > cfg.checkpoint_minutes * 60:
            with budget.paused():  # checkpoint I/O is not training time
                save_checkpoint(checkpoint, model, opt, budget, rng, order, pos)
            last_ck = time.perf_counter()
    budget.close()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, opt, budget, rng, order, pos)
    model.eval()
    return budget


def _save_snapshot(checkpoint: Path, model: torch.nn.Module, minutes: float) -> None:
    """Weights after ``minutes`` of training, for accuracy-against-time curves (benchmarks/)."""
    d = checkpoint.parent / "snapshots"
    d.mkdir(exist_ok=True)
    torch.save(model.state_dict(), d / f"coordinates_{minutes:g}min.pt")


def save_checkpoint(path: Path, model, opt, state: Budget, rng: np.random.Generator,
                    order: np.ndarray, pos: int) -> None:
    """Everything needed to continue exactly where training stopped (weights, optimiser, step,
    elapsed time, random states and the position in the current epoch's frame order)."""
    save_checkpoint_file(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": state.step,
                                "elapsed": state.elapsed, "history": state.history, "rng": rng.bit_generator.state,
                                "torch_rng": torch.get_rng_state(), "order": order, "pos": pos})


@torch.no_grad()
def predict_cache(model: torch.nn.Module, norm: SceneNormalisation, cache: FrameCache, device: str = "cpu",
                  batch: int = 8) -> np.ndarray:
    """Predicted scene coordinates ``(N, h, w, 3)`` metres for every cached frame (no augmentation)."""
    model.eval()
    out = []
    for s in range(0, len(cache), batch):
        img = torch.from_numpy(cache.images[s:s + batch]).permute(0, 3, 1, 2).float().div_(255.0)
        out.append(norm.to_metres(model(img.to(device))).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def coordinate_accuracy(pred: np.ndarray, cache: FrameCache) -> dict:
    """Median error (m) and share of pixels within 10 cm over all valid ground-truth pixels."""
    err = np.linalg.norm(pred - cache.coords, axis=-1)[cache.masks]
    if err.size == 0:
        return {"median_error_m": float("nan"), "within_10cm": float("nan"), "pixels": 0}
    return {"median_error_m": float(np.median(err)), "within_10cm": float((err < INLIER_THRESHOLD_M).mean()),
            "pixels": int(err.size)}


# ---------------------------------------------------------------------------- stage 2: confidence


def train_confidence(net: ConfidencePointNet, model: torch.nn.Module, norm: SceneNormalisation, cache: FrameCache,
                     image_hw: tuple[int, int], cfg: MappingConfig, device: str = "cpu") -> dict:
    """Stage 2: fit the PointNet to delta of the coordinate network's predictions on training frames.

    Predictions are made on *augmented* training images (same augmentation as stage 1) so the
    errors it learns to recognise look more like those on unseen views than the near-perfect fit
    on the original training images would (the paper trains on plain training predictions).
    """
    cfg = cfg.resolved()
    assert cfg.optimizer is not None and cfg.lr is not None and cfg.confidence_minutes is not None  # resolved()
    rng = np.random.default_rng(cfg.seed + 1)
    uv_grid = output_pixel_centres(cache.masks.shape[1:], cache.stride, image_hw, cache.images.shape[1:3]).float()
    opt = _make_optimizer(cfg.optimizer, net.parameters(), cfg.lr)
    net.to(device).train()
    model.eval()
    budget = Budget("confidence", cfg.confidence_minutes)
    aug = cfg.augmentation()
    while not budget.done:
        idx = rng.choice(len(cache), size=min(cfg.batch_size, len(cache)), replace=False)
        image, target, mask, _ = make_batch(cache, idx, aug, rng)
        with torch.no_grad():
            pred = norm.to_metres(model(image.to(device))).float().permute(0, 2, 3, 1).cpu()
        target = target.permute(0, 2, 3, 1)
        pts, dl = [], []
        for b in range(len(idx)):
            valid = mask[b].reshape(-1).nonzero().squeeze(1)
            if len(valid) < 16:
                continue
            # Small output grids (or images with little depth) hold fewer than N_k valid points:
            # draw with replacement then, so every set has N_k points as at inference.
            pick = valid[torch.from_numpy(rng.choice(len(valid), cfg.n_k, replace=len(valid) < cfg.n_k))]
            X_hat = pred[b].reshape(-1, 3)[pick]
            pts.append(confidence_inputs(uv_grid.reshape(-1, 2)[pick], X_hat, image_hw, norm))
            dl.append(confidence_target(X_hat, target[b].reshape(-1, 3)[pick], cfg.confidence_scale))
        if not pts:
            budget.tick()  # a batch with too few valid points still spends the budget
            continue
        x, delta = torch.stack(pts).to(device), torch.stack(dl).to(device)
        z = net.logits(x)
        if net.mode == "regression":
            # Paper eq. 7 (squared l2, averaged) on tanh(z): the ReLU of the output is left to
            # inference, since through it a net pushed below zero gets no gradient and stays dead
            # (relu(tanh) training collapsed to all-zero confidences in a redkitchen run).
            loss = ((torch.tanh(z) - delta) ** 2).mean()
        else:  # classification variant: inlier iff error < t_inlier
            inlier = (delta > math.exp(-cfg.confidence_scale * INLIER_THRESHOLD_M)).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, inlier)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        budget.tick(loss=loss.item())
    budget.close()
    net.eval()
    return {"steps": budget.step, "loss": budget.running.get("loss")}


# -------------------------------------------------------------------------------- whole mapping


def train_confidence_stage(model: torch.nn.Module, norm: SceneNormalisation, cache: FrameCache,
                           image_hw: tuple[int, int], cfg: MappingConfig, device: str = "cpu"):
    """Stage 2 as configured: the PointNet (``regression`` or ``classification``) and, with
    ``confidence_mode='both'``, the classifier beside it. Returns ``(net, classifier | None, info)``."""
    primary = "classification" if cfg.confidence_mode == "classification" else "regression"
    conf_net, classifier = ConfidencePointNet(mode=primary, blocks=cfg.confidence_blocks), None
    info = {primary: train_confidence(conf_net, model, norm, cache, image_hw, cfg, device)}
    if cfg.confidence_mode == "both":
        classifier = ConfidencePointNet(mode="classification", blocks=cfg.confidence_blocks)
        info["classification"] = train_confidence(classifier, model, norm, cache, image_hw, cfg, device)
    return conf_net, classifier, info


def confidence_config(conf_net: ConfidencePointNet | None, cfg: MappingConfig) -> dict:
    """The map-configuration entries of stage 2 (``config.json``)."""
    return {"confidence_network": conf_net.arch if conf_net is not None else {"mode": "regression"},
            "confidence": {"n_k": cfg.n_k, "scale": cfg.confidence_scale}}


