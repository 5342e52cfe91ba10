"""Direct pose regression, PoseNet-style: a small CNN maps a low-resolution image to a camera pose.

The network is trained from scratch (no pretrained weights can be downloaded here, unlike
PoseNet's GoogLeNet) on the training split under a wall-clock budget, the same kind of budget as
``sceneloc map --minutes``, and predicts the camera-to-world pose of any RGB image: position
``x (3,)`` (the camera centre in metres) and orientation ``q (4,)`` (unit quaternion of the
camera-to-world rotation, ``w >= 0``). RGB only: depth is not used.

Loss: Kendall & Cipolla 2017 ("Geometric loss functions for camera pose regression"), the learned
weighting of position and orientation, rather than PoseNet's fixed beta, which must be tuned per
scene (beta = 120-750 indoors to 2000 outdoors in Kendall 2015) and cannot be tuned here:

    L = |x - x*|_1 exp(-s_x) + s_x + |q* - q / |q||_1 exp(-s_q) + s_q

with ``s_x``, ``s_q`` learned, initialised to 0 and -3 (the paper's values), L1 norms (the paper's
choice). Positions are regressed relative to the mean training camera centre so that the output
layer does not first have to learn the scene's offset from the origin.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from sceneloc.data.dataset import Frame
from sceneloc.geometry import make_pose, matrix_to_quaternion, quaternion_to_matrix
from sceneloc.training.loop import Budget, lr_factor

MAP_FILES = ("posenet.pt", "config.json")
_MEAN, _STD = 0.45, 0.25   # fixed input normalisation (nothing is pretrained), as sceneloc's networks


@dataclass
class PoseNetConfig:
    """Training options. Input ``(H, W)`` is a crop of the image resized to ``crop_margin`` times
    the input size: random crops for training (PoseNet: 224 of 256), the centre crop for queries."""
    input_hw: tuple[int, int] = (96, 128)
    crop_margin: float = 1.125
    width: int = 32
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    minutes: float = 12.0
    iterations: int | None = None      # exact step count instead of the time budget (tests)
    init_sx: float = 0.0
    init_sq: float = -3.0
    aug_brightness: float = 0.2
    aug_contrast: float = 0.2
    seed: int = 0
    center: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])   # set by training

    @property
    def resized_hw(self) -> tuple[int, int]:
        h, w = self.input_hw
        return round(h * self.crop_margin), round(w * self.crop_margin)


def _conv(c_in: int, c_out: int, stride: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class PoseRegressor(nn.Module):
    """``(B, 3, H, W)`` images in [0, 1] -> positions ``(B, 3)`` (metres from the training centre)
    and quaternions ``(B, 4)`` (not normalised). A strided conv stem, three stride-2 stages of two
    3x3 convolutions (96x128 input -> 6x8 cells of 8 * width features), global average pooling and
    a two-layer head with dropout (PoseNet's regressor: a fully connected layer, then x and q)."""

    def __init__(self, width: int = 32, init_sx: float = 0.0, init_sq: float = -3.0):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        layers = [_conv(3, w[0], 2, k=5)]
        for a, b in itertools.pairwise(w):
            layers += [_conv(a, b, 2), _conv(b, b, 1)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(w[-1], 256), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(256, 7))
        self.s_x = nn.Parameter(torch.tensor(float(init_sx)))
        self.s_q = nn.Parameter(torch.tensor(float(init_sq)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.head(self.features((x - _MEAN) / _STD))
        return y[:, :3], y[:, 3:]

    def loss(self, x: torch.Tensor, q: torch.Tensor, x_gt: torch.Tensor, q_gt: torch.Tensor) -> torch.Tensor:
        """Kendall 2017 learned weighting over a batch: predictions ``(B, 3)``, ``(B, 4)``, targets alike."""
        l_x = (x - x_gt).abs().sum(1).mean()
        l_q = (q / q.norm(dim=1, keepdim=True).clamp_min(1e-8) - q_gt).abs().sum(1).mean()
        return l_x * torch.exp(-self.s_x) + self.s_x + l_q * torch.exp(-self.s_q) + self.s_q


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _centre_crop(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``(B, H', W', 3)`` -> the central ``(B, H, W, 3)``."""
    top, left = (images.shape[1] - hw[0]) // 2, (images.shape[2] - hw[1]) // 2
    return images[:, top:top + hw[0], left:left + hw[1]]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def pose_targets(frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres ``(N, 3)`` and camera-to-world quaternions ``(N, 4)`` (w, x, y, z; w >= 0)."""
    return (np.stack([f.pose[:3, 3] for f in frames]),
            np.stack([matrix_to_quaternion(f.pose[:3, :3]) for f in frames]))


def train_posenet(frames: Sequence[Frame], out_dir: str | Path, cfg: PoseNetConfig | None = None,
                  device: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Train on ``frames`` until ``cfg.minutes`` (or ``cfg.iterations``) and write ``out_dir``.

    Returns a report: steps, training seconds, images per second, the last losses and ``s_x``/``s_q``.
    """
    cfg = cfg or PoseNetConfig()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.perf_counter()
    images = np.stack([_resize(f.load_image(), cfg.resized_hw) for f in frames])   # (N, H', W', 3) uint8
    centres, quats = pose_targets(frames)
    center = centres.mean(0)
    cfg = PoseNetConfig(**{**asdict(cfg), "center": center.tolist()})
    x_all = torch.from_numpy(centres - center).float()
    q_all = torch.from_numpy(quats).float()
    model = PoseRegressor(cfg.width, cfg.init_sx, cfg.init_sq).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    H, W = cfg.input_hw
    losses = []
    # the library's budgeted loop (sceneloc.training.loop): minutes or steps, progress, cosine decay
    budget = Budget("posenet", cfg.minutes, cfg.iterations, show=False)
    while not budget.done:
        for g in opt.param_groups:  # cosine decay over the budget: its end is known in advance
            g["lr"] = cfg.lr * lr_factor("cosine", budget.fraction, warmup=0.0)
        idx = rng.integers(0, len(frames), cfg.batch_size)
        top = rng.integers(0, images.shape[1] - H + 1, cfg.batch_size)
        left = rng.integers(0, images.shape[2] - W + 1, cfg.batch_size)
        batch = np.stack([images[i, a:a + H, b:b + W] for i, a, b in zip(idx, top, left, strict=True)])
        x = _to_tensor(batch)
        bright = torch.from_numpy(rng.uniform(-cfg.aug_brightness, cfg.aug_brightness, (len(idx), 1, 1, 1))).float()
        contrast = torch.from_numpy(rng.uniform(1 - cfg.aug_contrast, 1 + cfg.aug_contrast,
                                                (len(idx), 1, 1, 1))).float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean + bright).clamp_(0, 1).to(device)
        pred_x, pred_q = model(x)
        loss = model.loss(pred_x, pred_q, x_all[idx].to(device), q_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        losses.append(value)
        budget.tick(loss=value)
        if budget.step % 200 == 0:
            log(f"posenet step {budget.step}: loss {np.mean(losses[-200:]):.3f} ({budget.elapsed:.0f} s)")
    budget.close()
    step, seconds = budget.step, budget.elapsed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "posenet.pt")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    report = {"steps": step, "seconds": round(seconds, 1), "total_seconds": round(time.perf_counter() - t_start, 1),
              "images_per_second": round(step * cfg.batch_size / max(seconds, 1e-9), 1),
              "final_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
              "s_x": model.s_x.item(), "s_q": model.s_q.item(), "device": device}
    log(f"posenet: {step} steps in {seconds:.0f} s ({report['images_per_second']} images/s), "
        f"loss {report['final_loss']:.3f}")
    return report


class PoseNetLocalizer:
    """A trained regressor: ``localize(image)`` -> camera-to-world ``(4, 4)`` pose (never fails)."""

    def __init__(self, map_dir: str | Path, device: str | None = None):
        d = Path(map_dir)
        raw = json.loads((d / "config.json").read_text())
        self.config = PoseNetConfig(**{**raw, "input_hw": tuple(raw["input_hw"])})
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = PoseRegressor(self.config.width)
        self.model.load_state_dict(torch.load(d / "posenet.pt", map_location=self.device, weights_only=True))
        self.model.to(self.device).eval()
        self.center = np.asarray(self.config.center)

    @torch.no_grad()
    def localize(self, image: np.ndarray) -> np.ndarray:
        """Pose ``(4, 4)`` of an ``(H, W, 3)`` uint8 RGB image (intrinsics are not used: the network
        learned the training camera's)."""
        crop = _centre_crop(_resize(image, self.config.resized_hw)[None], self.config.input_hw)
        x, q = self.model(_to_tensor(crop).to(self.device))
        x, q = x[0].double().cpu().numpy(), q[0].double().cpu().numpy()
        return make_pose(quaternion_to_matrix(q), self.center + x)
