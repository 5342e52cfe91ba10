"""``sceneloc serve MAP [MAP ...]``: the localization server (service/server.py) on uvicorn; cli/main.py registers
it with ``add_serve_command``."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import uvicorn

from sceneloc.errors import SceneLocError
from sceneloc.localize.tracking import TrackingConfig, track_frames
from sceneloc.mapping.queries import localize_frames
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import METHODS
from sceneloc.service.live_view import LiveView
from sceneloc.service.server import TOKEN_ENV, LocalizationService, ServerConfig, create_app

DEFAULTS = ServerConfig()


def is_local_host(host: str) -> bool:
    """Whether ``host`` binds only this machine (loopback); anything else needs a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def map_names(paths: list[str]) -> dict[str, Path]:
    """Map name (its folder's name) -> folder; two maps with one name are refused."""
    names: dict[str, Path] = {}
    for p in paths:
        path = Path(p)
        name = path.resolve().name
        if name in names:
            raise SceneLocError(f"{p}: a second map named {name!r} ({names[name]}); maps are named by their folder")
        names[name] = path
    return names


def server_token(given: str | None, host: str) -> str | None:
    """--token, else $SCENELOC_TOKEN; None only on a loopback host."""
    token = given or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_local_host(host):
        raise SceneLocError(f"--host {host} is reachable from other machines: give --token TOKEN "
                            f"(or set {TOKEN_ENV}), or bind 127.0.0.1")
    return token


def _cmd_serve(args: argparse.Namespace) -> None:
    token = server_token(args.token, args.host)
    config = ServerConfig(workers=args.workers, queue_size=args.queue_size, max_batch=args.max_batch,
                          batch_wait_ms=args.batch_wait_ms, timeout_s=args.timeout_s,
                          max_request_bytes=int(args.max_request_mb * (1 << 20)), max_pixels=args.max_pixels)
    maps = {name: Map.load(path, device=args.device) for name, path in map_names(args.maps).items()}
    # each worker runs its own network passes on --threads cores: more threads than free cores thrash
    # (conftest.py: two processes with two OpenMP threads each on two cores ran ~100x slower)
    torch.set_num_threads(args.threads)
    live = LiveView.start(next(iter(maps.values())), args.rerun) if args.rerun else None
    service = LocalizationService(maps, config, estimator=args.method, tracking=TrackingConfig(),
                                  on_result=None if live is None else live.on_result)
    print(f"serving {', '.join(sorted(maps))} on http://{args.host}:{args.port} "
          f"({'token required' if token else 'no token: loopback only'}; {config.workers} worker(s))", flush=True)
    # uvicorn's own connection cap is the last guard of memory (request bodies are read before the
    # queue can refuse them); well above the queue, so the queue's JSON 503 is what clients normally see
    try:
        uvicorn.run(create_app(service, token), host=args.host, port=args.port, log_level=args.log_level,
                    access_log=False, limit_concurrency=max(256, 8 * config.queue_size))
    finally:   # uvicorn returns on Ctrl-C / SIGTERM: complete the recording
        if live is not None:
            live.close()


def add_serve_command(sub) -> None:
    s = sub.add_parser("serve", help="serve maps over HTTP: POST /v1/localize, tracking sessions, /metrics")
    s.add_argument("maps", nargs="+", metavar="MAP", help="map folders written by 'sceneloc map' (named by folder)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s; any other "
                                                        "than loopback needs --token)")
    s.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    s.add_argument("--token", help=f"bearer token every endpoint but /healthz requires (default ${TOKEN_ENV})")
    s.add_argument("--workers", type=int, default=DEFAULTS.workers,
                   help="queue consumers and pose threads (default %(default)s)")
    s.add_argument("--threads", type=int, default=1,
                   help="torch threads each worker's network passes use (default %(default)s)")
    s.add_argument("--queue-size", type=int, default=DEFAULTS.queue_size,
                   help="admitted requests waiting for a worker; beyond it, 503 + Retry-After (default %(default)s)")
    s.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch,
                   help="queued requests (one map, one image size) sharing a network pass (default %(default)s)")
    s.add_argument("--batch-wait-ms", type=float, default=DEFAULTS.batch_wait_ms,
                   help="how long a worker waits for a batch to fill (default %(default)s)")
    s.add_argument("--timeout-s", type=float, default=DEFAULTS.timeout_s,
                   help="answer 503 when a request is not done this long after admission (default %(default)s)")
    s.add_argument("--max-request-mb", type=float, default=DEFAULTS.max_request_bytes / (1 << 20),
                   help="largest request body (default %(default)s)")
    s.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels,
                   help="largest image, read from its header before decoding (default %(default)s)")
    s.add_argument("--method", choices=[m for m in METHODS if m not in ("dsac", "softam")], default="ransac",
                   help="pose estimator (default %(default)s)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--rerun", nargs="?", const="spawn", metavar="FILE.rrd",
                   help="log the map, each query and the trajectory to a rerun viewer (spawned), or to FILE.rrd "
                        "(needs the [viewer] extra)")
    s.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default %(default)s)")
    s.set_defaults(func=_cmd_serve)


# ----------------------------------------------------------------- `localize`'s stream options


def add_stream_arguments(s: argparse.ArgumentParser) -> None:
    """``localize --sequence`` (track the split in order) and ``--rerun`` (live view)."""
    s.add_argument("--sequence", action="store_true",
                   help="dataset mode: stream the split in order, each frame tracked from the previous pose "
                        "(aligned to the map's surface, no network pass) and relocalized when that fails")
    s.add_argument("--rerun", nargs="?", const="spawn", metavar="FILE.rrd",
                   help="log the map, each query and the estimated and true trajectories to a rerun viewer "
                        "(spawned), or to FILE.rrd (needs the [viewer] extra)")


def localized_stream(the_map: Map, frames: list, args: argparse.Namespace, config) -> Iterator[tuple[Any, Any]]:
    """``localize``'s ``(frame, result)`` pairs: tracked with ``--sequence``, else each frame on its own;
    logged to rerun with ``--rerun``."""
    live = LiveView.start(the_map, args.rerun) if args.rerun else None
    stream = (track_frames(the_map, frames, args.mode, config, seed=args.seed) if args.sequence
              else localize_frames(the_map, frames, args.mode, config, args.seed))
    for frame, res in stream:
        if live is not None:
            live.log(frame.load_image(), frame.K, res, true_pose=frame.pose, name=frame.name)
        yield frame, res
    if live is not None:
        live.close()
