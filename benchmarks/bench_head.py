"""Ablation of the xfeat map's head training on a cached buffer: which head, batch, learning rate,
buffer and features generalise best per CPU-minute.

Each row trains a fresh head for ``--minutes`` on the same training buffer and reports the error of
its scene coordinates on a buffer of the test split (every other test frame, unaugmented, all valid
cells): median and share within 10 cm. Buffers are filled once and cached in ``--work``.

Usage:
    python benchmarks/bench_head.py --data ../shared/data/7scenes-redkitchen --minutes 1.5 \\
        --rows base= w128=width=128 w512=width=512 b4096=batch=4096 lr1e-3=lr=1e-3 fused=features=64 \\
               copies4=copies=4 reproj=loss=euclidean+reprojection
A row is ``NAME=KEY=VALUE[,KEY=VALUE...]`` over the defaults of ``sceneloc map`` (keys: width, blocks,
batch, lr, loss, precision, copies, scale, features = how many leading encoder channels the head sees,
average = share of the budget after which the head's weights are averaged).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sceneloc.data.dataset import load_scene
from sceneloc.nets.models import EncoderHeadNet, SceneNormalisation
from sceneloc.training.buffer import PixelBuffer, entries_for_memory, fill_buffer
from sceneloc.training.head import train_head
from sceneloc.training.trainers import MappingConfig

TEST_FRAME_STEP = 2


def cached_buffer(path: Path, make) -> PixelBuffer:
    if path.exists():
        return PixelBuffer(**torch.load(path))
    buf = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(buf.__dict__, path)
    return buf


def parse_row(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    return name, dict(kv.split("=", 1) for kv in spec.split(",") if kv)


def run_row(opts: dict, scene, norm: SceneNormalisation, cfg: MappingConfig, minutes: float, work: Path,
            test: PixelBuffer) -> dict:
    copies, scale = int(opts.get("copies", cfg.buffer_copies)), float(opts.get("scale", cfg.aug_scale))
    probe = EncoderHeadNet(cfg.encoder, 16, 0)
    entries = entries_for_memory(cfg.buffer_mb, probe.encoder.channels)
    t0 = time.perf_counter()
    train = cached_buffer(work / f"train_c{copies}_s{scale:g}.pt", lambda: fill_buffer(
        scene.frames("train"), probe, cfg.input_height, entries, copies, cfg.seed, scale, cfg.aug_rotation_deg,
        cfg.aug_brightness, cfg.aug_contrast))
    fill_s = time.perf_counter() - t0
    channels = int(opts.get("features", train.features.shape[1]))
    if channels != train.features.shape[1]:  # the head sees only the leading channels (64: XFeat's fused map)
        train = PixelBuffer(train.features[:, :channels], train.targets, train.pixels, train.frames, train.T_cw,
                            train.K)
        test = PixelBuffer(test.features[:, :channels], test.targets, test.pixels, test.frames, test.T_cw, test.K)
    net = EncoderHeadNet(cfg.encoder, int(opts.get("width", cfg.head_width)), int(opts.get("blocks", cfg.head_blocks)))
    if channels != 256:
        from sceneloc.nets.models import CoordinateHead
        net.head = CoordinateHead(channels, int(opts.get("width", cfg.head_width)),
                                  int(opts.get("blocks", cfg.head_blocks)))
    torch.manual_seed(cfg.seed)
    budget = train_head(net, norm, train, minutes, None, int(opts.get("batch", cfg.pixel_batch)),
                        float(opts.get("lr", cfg.lr)), loss=opts.get("loss", cfg.head_loss), seed=cfg.seed,
                        precision=opts.get("precision", "bf16"), average_from=float(opts.get("average", 1.0)))
    center = torch.tensor(norm.center)
    with torch.no_grad():
        pred = torch.cat([norm.scale * net.head(test.features[i:i + 100_000].float()) + center
                          for i in range(0, len(test), 100_000)])
    err = torch.linalg.vector_norm(pred - test.targets, dim=1).numpy()
    return {"steps": budget.step, "buffer_entries": len(train), "buffer_fill_s": round(fill_s, 1),
            "test_median_cm": round(100 * float(np.median(err)), 2),
            "test_within_10cm": round(float((err < 0.1).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=1.5, help="head training per row")
    ap.add_argument("--rows", nargs="+", default=["base="])
    ap.add_argument("--work", default="runs/bench_head", help="cached buffers")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    cfg = MappingConfig().resolved()
    scene = load_scene(args.data)
    stats = scene.statistics()
    norm = SceneNormalisation(tuple(float(v) for v in stats.center), float(stats.diameter / 2))
    work = Path(args.work) / Path(args.data).resolve().name
    probe = EncoderHeadNet(cfg.encoder, 16, 0)
    test = cached_buffer(work / "test.pt", lambda: fill_buffer(scene.frames("test")[::TEST_FRAME_STEP], probe,
                                                               cfg.input_height, 10 ** 8, 1, cfg.seed))
    shown = ("head_width", "head_blocks", "pixel_batch", "lr", "head_loss", "buffer_copies", "aug_scale", "buffer_mb")
    print(f"defaults: {json.dumps({k: v for k, v in asdict(cfg).items() if k in shown})}")
    print(f"| row | options | steps in {args.minutes:g} min | test median | test within 10 cm |")
    print("|---|---|---|---|---|")
    rows = []
    for text in args.rows:
        name, opts = parse_row(text)
        r = run_row(opts, scene, norm, cfg, args.minutes, work, test)
        rows.append({"row": name, "options": opts, **r})
        print(f"| {name} | {', '.join(f'{k}={v}' for k, v in opts.items()) or 'defaults'} | {r['steps']} | "
              f"{r['test_median_cm']:.1f} cm | {100 * r['test_within_10cm']:.1f} % |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
