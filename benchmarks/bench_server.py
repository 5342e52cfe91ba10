"""Load test of `sceneloc serve` on loopback: throughput and latency under concurrent clients, and the
server's behaviour at twice its sustainable rate (docs/server.md).

Starts `sceneloc serve MAP --host 127.0.0.1` as a subprocess, streams a split's frames (JPEG/PNG bytes
as stored; depth registered to the image and sent as a 16-bit PNG) from an asyncio httpx load
generator, and measures:

1. closed loop: C concurrent clients (each sends its next frame when the last is answered) for
   ``--seconds``: frames/s answered 200 and p50 / p95 / p99 latency, per mode (rgb, rgbd);
2. open loop at ``--overload`` x the best closed-loop rate: requests sent on a fixed schedule whatever
   the answers, for ``--seconds``: share answered 200 / 503, p95 of the accepted, the server's peak RSS,
   whether it is still alive and healthy after.

Traffic goes to 127.0.0.1 only, bounded in count (``--max-requests``) and time.

Usage:
    python benchmarks/bench_server.py --map MAP --data ../shared/data/7scenes-redkitchen --out server.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from sceneloc.data.dataset import load_scene

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_parts(data: str, split: str, count: int) -> list[dict]:
    """Multipart parts of the split's first ``count`` frames: image bytes, registered depth PNG, intrinsics."""
    parts = []
    for frame in load_scene(data).frames(split)[:count]:
        image = frame.image_path.read_bytes()
        depth_mm = np.round(frame.load_depth() * 1000).astype(np.uint16)
        depth = cv2.imencode(".png", depth_mm)[1].tobytes()
        K = frame.K
        parts.append({"image": image, "depth": depth, "intrinsics": f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"})
    return parts


async def post(client: httpx.AsyncClient, part: dict, mode: str) -> tuple[int, float]:
    files = {"image": ("image", part["image"])}
    if mode == "rgbd":
        files["depth"] = ("depth", part["depth"])
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/localize", files=files, data={"intrinsics": part["intrinsics"]})
        status = r.status_code
    except httpx.HTTPError:
        status = 0   # connection refused / reset: counted, never retried
    return status, time.perf_counter() - t0


def latency_summary(statuses: list[int], latencies: list[float], seconds: float) -> dict:
    ok = np.array([lat for s, lat in zip(statuses, latencies, strict=True) if s == 200]) * 1000
    codes = {str(c): statuses.count(c) for c in sorted(set(statuses))}
    pct = (lambda q: float(np.percentile(ok, q))) if len(ok) else (lambda q: float("nan"))
    return {"requests": len(statuses), "codes": codes, "fps": len(ok) / seconds,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}


async def closed_loop(url: str, token: str, parts: list[dict], mode: str, clients: int, seconds: float,
                      max_requests: int) -> dict:
    statuses: list[int] = []
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def one_client(k: int) -> None:
        i = k * len(parts) // clients   # each client streams its own stretch, in order
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=60) as client:
            while time.perf_counter() < end and len(statuses) < max_requests:
                status, lat = await post(client, parts[i % len(parts)], mode)
                statuses.append(status)
                latencies.append(lat)
                i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(k) for k in range(clients)))
    return latency_summary(statuses, latencies, time.perf_counter() - t0)


async def open_loop(url: str, token: str, parts: list[dict], mode: str, rate: float, seconds: float,
                    max_requests: int, pid: int) -> dict:
    statuses: list[int] = []
    latencies: list[float] = []
    peak = rss_mb(pid)
    n = min(int(rate * seconds), max_requests)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                 limits=limits) as client:
        async def one(i: int) -> None:
            status, lat = await post(client, parts[i % len(parts)], mode)
            statuses.append(status)
            latencies.append(lat)

        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
            peak = max(peak, rss_mb(pid))
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.05)
            peak = max(peak, rss_mb(pid))
        elapsed = time.perf_counter() - t0
    out = latency_summary(statuses, latencies, elapsed)
    out.update(offered_rate=rate, peak_rss_mb=peak)
    return out


def start_server(map_dir: str, port: int, token: str, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sceneloc.cli", "serve", map_dir, "--host", HOST, "--port", str(port),
           "--token", token, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--frames", type=int, default=100, help="frames of the split to stream (default %(default)s)")
    ap.add_argument("--modes", nargs="+", default=["rgb", "rgbd"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=15.0, help="per measurement (default %(default)s)")
    ap.add_argument("--overload", type=float, default=2.0, help="open-loop rate over the best (default %(default)s)")
    ap.add_argument("--max-requests", type=int, default=2000, help="per measurement (default %(default)s)")
    ap.add_argument("--serve-args", default="", help="extra `sceneloc serve` options, one string")
    ap.add_argument("--out", help="JSON file to write")
    a = ap.parse_args()
    token = os.urandom(8).hex()
    parts = request_parts(a.data, a.split, a.frames)
    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = start_server(a.map, port, token, a.serve_args.split())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    report: dict = {"commit": commit, "serve_args": a.serve_args, "frames": len(parts), "closed": {}, "overload": {}}
    try:
        for mode in a.modes:
            for c in a.clients:
                s = asyncio.run(closed_loop(url, token, parts, mode, c, a.seconds, a.max_requests))
                report["closed"][f"{mode} {c}"] = s
                print(f"{mode:4s} {c} client(s): {s['fps']:.1f} frames/s, p50 {s['p50_ms']:.0f} ms, "
                      f"p95 {s['p95_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, codes {s['codes']}", flush=True)
            best = max(report["closed"][f"{mode} {c}"]["fps"] for c in a.clients)
            s = asyncio.run(open_loop(url, token, parts, mode, a.overload * best, a.seconds, a.max_requests,
                                      proc.pid))
            alive = proc.poll() is None and httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            s["alive_after"] = alive
            report["overload"][mode] = s
            print(f"{mode:4s} open loop at {s['offered_rate']:.1f}/s ({a.overload:g}x {best:.1f}): {s['fps']:.1f} "
                  f"frames/s answered 200, codes {s['codes']}, accepted p50 {s['p50_ms']:.0f} ms p95 "
                  f"{s['p95_ms']:.0f} ms p99 {s['p99_ms']:.0f} ms, peak RSS {s['peak_rss_mb']:.0f} MB, "
                  f"alive after: {alive}", flush=True)
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5).text
        report["batch_size"] = [ln for ln in metrics.splitlines() if ln.startswith("sceneloc_batch_size_")
                                and ("_sum" in ln or "_count" in ln)]
        print("\n".join(report["batch_size"]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
