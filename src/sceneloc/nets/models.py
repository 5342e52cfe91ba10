"""Networks: the scene coordinate regressors (paper U-Net, DSAC*/ACE-style FCN) and the
correspondence-confidence PointNet.

Coordinate networks map an RGB image ``(B, 3, H, W)`` (values in [0, 1]) to *normalised* scene
coordinates ``(B, 3, H / stride, W / stride)``; :class:`SceneNormalisation` turns them into metres,
so one set of defaults serves a 1 m^3 and a 20 m^3 scene. Each network is built from an explicit
config dict (``build_coordinate_network``) that is saved in the map directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import torch
import torch.nn as nn
import torch.nn.functional as F

from sceneloc.errors import SceneLocError
from sceneloc.nets.encoders import XFeatEncoder, load_encoder, use_bf16

# ImageNet-free input normalisation: nothing is pretrained, so a fixed mean/std is enough.
_MEAN, _STD = 0.45, 0.25


class CoordinateNetwork(nn.Module):
    """What every coordinate network declares: its output ``stride`` and the ``multiple`` its input
    height and width must be (the caller pads)."""
    stride: int
    multiple: int


@dataclass
class SceneNormalisation:
    """``X = center + scale * y``: network outputs ``y`` are O(1) whatever the scene size."""
    center: tuple[float, float, float]
    scale: float

    def to_metres(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` normalised -> metres."""
        c = torch.as_tensor(self.center, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
        return c + self.scale * y


def _conv_block(c_in: int, c_out: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
              nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class UNet(CoordinateNetwork):
    """The paper's U-Net (section III-D): 4 conv blocks with pooling and dropout, 4 up-sampling
    blocks, an ``h x w x 8`` feature map and a last 1x1 convolution to ``h x w x 3``.

    Output stride 1: one prediction per input pixel. Input H and W must be multiples of 16
    (the caller pads).
    """
    stride = 1
    multiple = 16

    def __init__(self, width: int = 16, dropout: float = 0.1):
        super().__init__()
        w = [width * 2 ** i for i in range(5)]  # 16, 32, 64, 128, 256 for width 16
        self.down = nn.ModuleList([_conv_block(3, w[0], dropout)] +
                                  [_conv_block(w[i], w[i + 1], dropout) for i in range(3)])
        self.bottom = _conv_block(w[3], w[4], dropout)
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(4))])
        self.merge = nn.ModuleList([_conv_block(2 * w[i], w[i]) for i in reversed(range(4))])
        # Linear 8-channel feature map: a ReLU here can switch channels off for good and collapse
        # every prediction towards the scene centre (seen in 10-minute CPU runs).
        self.features = nn.Conv2d(w[0], 8, 3, padding=1)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - _MEAN) / _STD
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(self.features(x))


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


#: The FCN's output strides and first layers.
FCN_STRIDES = (4, 8, 16)
FCN_STEMS = ("strided", "full")


class FCN(CoordinateNetwork):
    """DSAC*/ACE-style fully convolutional regressor with output stride 8 (4 and 16 as options).

    A strided convolutional encoder (receptive field of a few dozen pixels, so each prediction
    depends on a local patch; errors are then local and easy for RANSAC to reject) followed by a
    per-pixel MLP head of 1x1 convolutions, as in ACE.

    ``stem="strided"`` (default) makes the first convolution stride 2; ``"full"`` keeps a
    full-resolution first layer (DSAC*'s). On a CPU the full-resolution layer and the one after it
    are memory-bound and cost much of a training step for little accuracy (docs/decisions/fcn-training.md).
    """
    def __init__(self, width: int = 32, blocks: int = 2, head_width: int = 256, head_layers: int = 3,
                 stride: int = 8, max_width: int | None = None, stem: str = "strided"):
        super().__init__()
        max_width = max_width or 8 * width  # the channel count reached at stride 8 (256 for width 32)
        if stride not in FCN_STRIDES:
            raise ValueError(f"FCN output stride must be one of {FCN_STRIDES}, not {stride}")
        if stem not in FCN_STEMS:
            raise ValueError(f"FCN stem must be one of {FCN_STEMS}, not {stem!r}")
        self.stride = self.multiple = stride
        halvings = int(math.log2(stride))
        if stem == "strided":
            enc, halvings = [nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)], halvings - 1
        else:
            enc = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        c = width
        for _ in range(halvings):  # one stride-2 stage per remaining factor of two
            c_out = min(2 * c, max_width)
            enc += [nn.Conv2d(c, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True)]
            c = c_out
        if c < max_width:  # widen to max_width at the output stride (the strided stem ends one doubling short)
            enc += [nn.Conv2d(c, max_width, 3, padding=1, bias=False), nn.BatchNorm2d(max_width), nn.ReLU(inplace=True)]
            c = max_width
        enc += [_ResBlock(c) for _ in range(blocks)]
        self.encoder = nn.Sequential(*enc)
        head = []
        for _ in range(head_layers):
            head += [nn.Conv2d(c, head_width, 1), nn.ReLU(inplace=True)]
            c = head_width
        head.append(nn.Conv2d(c, 3, 1))
        self.head = nn.Sequential(*head)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder((image - _MEAN) / _STD))


class CoordinateHead(nn.Module):
    """ACE's per-pixel regression head: features ``(N, C)`` -> normalised scene coordinates ``(N, 3)``.

    A linear layer to ``width``, ``blocks`` residual blocks of two linear layers, a linear output.
    Pixels are independent, so it trains on shuffled pixels of many images at once (training/buffer.py).
    """
    def __init__(self, in_channels: int, width: int = 256, blocks: int = 2):
        super().__init__()
        self.inp = nn.Linear(in_channels, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                                  nn.Linear(width, width)) for _ in range(blocks))
        self.out = nn.Linear(width, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.inp(features))
        for block in self.blocks:
            x = F.relu(x + block(x))
        # The output stays fp32 under a bf16 autocast: bf16's 8-bit mantissa is centimetres in metres.
        with torch.autocast(x.device.type, enabled=False):
            return self.out(x.float())


class EncoderHeadNet(CoordinateNetwork):
    """A frozen pretrained encoder (nets/encoders.py) and a learned :class:`CoordinateHead`:
    ``(B, 3, H, W)`` -> normalised coordinates ``(B, 3, H / 8, W / 8)``.

    The encoder is deliberately *not* a registered sub-module: its weights belong to an installed
    package, so the map's ``state_dict`` (and file) holds the head alone and ``parameters()`` --
    what every optimiser sees, the DSAC stage's included -- are the head's. ``_apply`` still moves
    the encoder with the head (``.to(device)``).
    """
    def __init__(self, encoder: str = "xfeat", head_width: int = 256, head_blocks: int = 2,
                 encoder_sha256: str | None = None, precision: str = "auto"):
        super().__init__()
        self.precision = precision  # of the encoder: encoders.use_bf16 (docs/decisions/precision.md)
        self._encoder = [load_encoder(encoder, encoder_sha256)]  # a list hides it from nn.Module registration
        enc = self._encoder[0]
        self.stride, self.multiple = enc.stride, enc.multiple
        self.head = CoordinateHead(enc.channels, head_width, head_blocks)

    @property
    def encoder(self) -> XFeatEncoder:
        return self._encoder[0]

    def _apply(self, fn, *args, **kwargs):
        self._encoder[0]._apply(fn)
        return super()._apply(fn, *args, **kwargs)

    def _autocast(self, device_type: str) -> torch.autocast:
        """The bf16 autocast of ``self.precision`` (off where it means fp32)."""
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16(self.precision, device_type))

    @torch.no_grad()
    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen encoder features ``(B, C, H / 8, W / 8)`` (fp32) of images in [0, 1]."""
        with self._autocast(image.device.type):
            return self.encoder(image).float()

    def regress(self, features: torch.Tensor) -> torch.Tensor:
        """Head on dense features: ``(B, C, h, w)`` -> ``(B, 3, h, w)`` normalised coordinates. Features in
        bf16 (the encoder's under ``_autocast``) go to the head's first (bf16) layer as they are: an fp32
        copy would be rounded straight back to the same values."""
        y = self.head(features.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # the head trains under this autocast (training/head.py): inference in bf16 matches it, and is
        # faster on a CPU (docs/decisions/precision.md)
        with self._autocast(image.device.type):
            with torch.no_grad():   # the encoder is frozen; the head may be trained through this (DSAC stage)
                features = self.encoder(image)
            return self.regress(features)


ARCHITECTURES = ("xfeat", "fcn", "unet")


def build_coordinate_network(config: dict) -> CoordinateNetwork:
    """``{"arch": "xfeat", "head_width": 256, ...}``, ``{"arch": "fcn", "width": 32, ...}`` or
    ``{"arch": "unet", "width": 16, "dropout": 0.1}``."""
    cfg = dict(config)
    arch = cfg.pop("arch")
    if arch == "xfeat":
        return EncoderHeadNet(**cfg)
    if arch == "unet":
        return UNet(**cfg)
    if arch == "fcn":
        return FCN(**cfg)
    raise ValueError(f"unknown architecture {arch!r} (choose {', '.join(ARCHITECTURES)})")


class ContextNormBlock(nn.Module):
    """Residual block of Yi et al. ("Learning to find good correspondences", the paper's [21]):
    per-point linear layers, each followed by context normalisation, i.e. normalising every channel
    over the set's points, so a point is judged by how it sits among the others (``(B, N, C)``)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    @staticmethod
    def context_norm(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.context_norm(self.fc1(x)))
        return torch.relu(x + self.context_norm(self.fc2(y)))


class ConfidencePointNet(nn.Module):
    """PointNet (segmentation variant) regressing a confidence per 2D-3D correspondence.

    Input ``(B, N, 5)``: normalised pixel position (2) and normalised predicted scene coordinate (3).
    Each point's feature is concatenated with the max-pooled global feature, so a point is judged
    against the set it comes with. ``blocks`` context-normalised residual blocks (Yi et al., whom
    the paper follows for the output) come before the pooling; 0 gives the plain PointNet.
    Output ``(B, N)``: for regression ``relu(tanh(z))`` in [0, 1] (the paper, after Yi et al.: an
    exact 0 is easy to reach for gross outliers); for the classification variant the raw logit ``z``.
    """

    def __init__(self, width: int = 64, global_width: int = 256, mode: str = "regression", blocks: int = 0):
        super().__init__()
        if mode not in ("regression", "classification"):
            raise ValueError(f"unknown confidence mode {mode!r}")
        self.mode = mode
        self.arch = {"width": width, "global_width": global_width, "mode": mode, "blocks": blocks}
        self.local = nn.Sequential(nn.Linear(5, width), nn.ReLU(inplace=True),
                                   nn.Linear(width, 2 * width), nn.ReLU(inplace=True),
                                   *[ContextNormBlock(2 * width) for _ in range(blocks)])
        self.glob = nn.Sequential(nn.Linear(2 * width, global_width), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Linear(2 * width + global_width, 2 * width), nn.ReLU(inplace=True),
                                  nn.Linear(2 * width, width), nn.ReLU(inplace=True), nn.Linear(width, 1))

    def logits(self, points: torch.Tensor) -> torch.Tensor:
        """The pre-activation ``z``, ``(B, N)``."""
        f = self.local(points)
        g = self.glob(f).max(dim=1, keepdim=True).values.expand(-1, f.shape[1], -1)
        return self.head(torch.cat([f, g], dim=-1)).squeeze(-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        z = self.logits(points)
        return torch.relu(torch.tanh(z)) if self.mode == "regression" else z

    def confidence(self, points: torch.Tensor) -> torch.Tensor:
        """Confidence in [0, 1] whatever the mode, ``(B, N)``."""
        z = self.forward(points)
        return z if self.mode == "regression" else torch.sigmoid(z)


# ------------------------------------------------------------------ network input and output grid


Net = TypeVar("Net", bound=nn.Module)


def load_weights(net: Net, path: Path, device: str, what: str, hint: str = "") -> Net:
    """``net`` with the state dict in ``path``; a missing or mismatched file is a one-line
    SceneLocError naming the file (``what``: whose configuration it must match; ``hint``: what to do)."""
    if not path.exists():
        raise SceneLocError(f"{path}: missing {what} weights{hint}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: PyTorch's zip/pickle errors run to hundreds of characters
        raise SceneLocError(f"{path}: unreadable {what} weights (truncated or not a PyTorch file: "
                            f"{type(e).__name__}){hint}") from None
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        reason = (str(e).splitlines() or [""])[0][:120]
        raise SceneLocError(f"{path}: weights do not match the {what} configuration ({reason}){hint}") from None
    return net


def input_size(image_hw: tuple[int, int], input_height: int, multiple: int) -> tuple[int, int, float]:
    """Network input ``(H_in, W_in)`` for an image of ``image_hw``, and the resize factor.

    The image is resized isotropically to ``input_height`` rows; the width is rounded to the
    network's multiple (a sub-pixel aspect change, accounted for in the pixel mapping).
    """
    H, W = image_hw
    f = input_height / H
    w_in = max(multiple, int(round(W * f / multiple)) * multiple)
    return input_height, w_in, f


def image_to_tensor(image, input_hw: tuple[int, int]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB numpy -> ``(1, 3, H_in, W_in)`` float in [0, 1] (area resampling)."""
    h, w = input_hw
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0)


def output_pixel_centres(out_hw: tuple[int, ...], stride: int, image_hw: tuple[int, int],
                         input_hw: tuple[int, int]) -> torch.Tensor:
    """Full-resolution pixel coordinates ``(h, w, 2)`` (u, v) of each network output cell.

    Output cell ``j`` is centred on input pixel ``stride j + (stride - 1) / 2``; an input pixel
    ``p`` is at full-resolution ``(p + 0.5) * H / H_in - 0.5`` (pixel centres, per axis).
    """
    h, w = out_hw
    sy = image_hw[0] / input_hw[0]
    sx = image_hw[1] / input_hw[1]
    v = (torch.arange(h, dtype=torch.float64) * stride + (stride - 1) / 2 + 0.5) * sy - 0.5
    u = (torch.arange(w, dtype=torch.float64) * stride + (stride - 1) / 2 + 0.5) * sx - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def confidence_inputs(pixels: torch.Tensor, coords: torch.Tensor, image_hw: tuple[int, int],
                      norm: SceneNormalisation) -> torch.Tensor:
    """PointNet input ``(..., 5)``: pixels ``(..., 2)`` scaled to [-1, 1] and normalised coordinates ``(..., 3)``."""
    H, W = image_hw
    p = torch.stack([pixels[..., 0] / (W - 1) * 2 - 1, pixels[..., 1] / (H - 1) * 2 - 1], dim=-1)
    c = (coords - torch.as_tensor(norm.center, dtype=coords.dtype, device=coords.device)) / norm.scale
    return torch.cat([p.to(coords.dtype), c], dim=-1)
