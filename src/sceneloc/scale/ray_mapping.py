"""Partitioned maps built on Ray: ``sceneloc map --partitions N | --partition-by folder``.

Each partition (scale/partition.py) is mapped by ``mapping.build.map_scene`` on its own frames, as one Ray task that
declares what it needs (CPUs, memory, a GPU where the cluster has one): by default on a local Ray started
here (``ray.init``, as many tasks at once as ``workers``), or on an existing cluster (``ray_address`` or
``RAY_ADDRESS``; started with ``ray start --head`` and ``ray start --address=...``), whose nodes read the
dataset and write the map at the same paths. Ray retries a task whose worker died or that raised an
error other than a user error; a partition is finished when its ``mapping_report.json`` is written, and
``resume`` skips finished ones. After its head, a task writes the partition's routing descriptors
(scale/routing.py). The map directory holds ``partitions.json`` (the layout) and one map per partition.

Ray is an optional extra (``pip install -e '.[scale]'``): it is imported when a partitioned map is made,
so that every other command works without it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError, refuse_to_overwrite
from sceneloc.mapping.build import map_scene
from sceneloc.mapping.scene_map import default_device
from sceneloc.scale.partition import LAYOUT_FILE, Partition, make_partitions, read_layout, write_layout
from sceneloc.scale.routing import (
    CODEBOOK_FILE,
    DescriptorEncoder,
    fit_codebook,
    frame_descriptors,
    routing_is_current,
    write_routing,
)
from sceneloc.training.trainers import MappingConfig

#: Ray's object store on a local start: tasks pass paths and small reports only, so keep it small
LOCAL_OBJECT_STORE_BYTES = 80 * 2 ** 20
#: what a task retries on: a worker that died, or an error that is not the user's (SceneLocError is)
RETRIES = 2
#: memory a task declares besides its training buffer (encoder, frames, stage 2)
TASK_BASE_MEMORY_BYTES = 1 * 2 ** 30


def partition_done(part_dir: Path) -> bool:
    """Whether a partition's map is complete (map_scene writes its report last)."""
    return (part_dir / "mapping_report.json").exists()


def map_partition(dataset: str, part_dir: str, cfg: MappingConfig, frames: list[str], threads: int,
                  codebook: np.ndarray, intrinsics: np.ndarray | None = None) -> dict:
    """One partition's map (a Ray task's body): ``map_scene`` on its ``frames``, then its routing
    descriptors over ``codebook``. Runs on whatever node Ray picked, with ``threads`` torch threads, on
    the GPU when the worker has one. Resumes the partition's own checkpoint when an earlier attempt left one."""
    torch.set_num_threads(max(1, threads))
    d = Path(dataset)
    out = Path(part_dir)
    name = out.name
    t0 = time.perf_counter()
    resume = (out / "checkpoint.pt").exists() and (out / "mapping_config.json").exists()
    report = map_scene(d, out, cfg, force=True, resume=resume, device=default_device(), intrinsics=intrinsics,
                       evaluate_test=False, frames=frames, log=lambda msg: print(f"[{name}] {msg}", flush=True))
    write_partition_routing(d, out, frames, codebook, intrinsics)
    return {"name": name, "frames": len(frames), "seconds": round(time.perf_counter() - t0, 1),
            "device": default_device(), "node": os.uname().nodename, "steps": report["training"]["steps"]}


def write_partition_routing(dataset: Path, part_dir: Path, frames: list[str], codebook: np.ndarray,
                            intrinsics: np.ndarray | None = None) -> None:
    """``part_dir/routing.npz``: the routing descriptors of the partition's mapping ``frames``."""
    keep = set(frames)
    scene_frames = [f for f in load_scene(dataset, intrinsics).frames("train") if f.name in keep]
    write_routing(part_dir, [f.name for f in scene_frames],
                  frame_descriptors(scene_frames, DescriptorEncoder(codebook, default_device())), codebook)


def routing_codebook(dataset: str | Path, map_dir: Path, resume: bool, intrinsics: np.ndarray | None = None,
                     log=print) -> np.ndarray:
    """The visual words of every partition's routing descriptors (routing.fit_codebook on the capture's
    mapping frames), fitted before the partitions are mapped and kept in ``map_dir``; ``resume`` reuses
    the kept one, so that finished partitions keep comparable descriptors."""
    path = map_dir / CODEBOOK_FILE
    if resume and path.exists():
        try:
            return np.load(path)
        except (OSError, ValueError):   # unreadable: fit again (finished partitions are then re-described)
            log(f"{path}: unreadable, fitting the routing codebook again")
    t0 = time.perf_counter()
    codebook = fit_codebook(load_scene(dataset, intrinsics).frames("train"), DescriptorEncoder(device=default_device()))
    np.save(path, codebook)
    log(f"routing codebook: {len(codebook)} words fitted in {time.perf_counter() - t0:.0f} s")
    return codebook


def _start_ray(address: str | None, workers: int, log) -> Any:
    """Connect to the cluster at ``address``, or (None) start a local Ray with ``workers`` CPUs, no
    dashboard and a small object store; returns the ``ray`` module."""
    try:
        import ray  # the optional [scale] extra: only partitioned mapping needs it
    except ImportError:
        raise SceneLocError("partitioned maps run on Ray: pip install -e '.[scale]' (or: pip install ray)") from None
    if ray.is_initialized():
        return ray
    if address:
        log(f"Ray: joining the cluster at {address}")
        ray.init(address=address, log_to_driver=True, _node_ip_address=loopback_host(address))
    else:
        ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 log_to_driver=True)
    return ray


def loopback_host(address: str) -> str | None:
    """The host of a cluster ``address`` (``HOST:PORT``) on this machine's loopback network, else None: a
    driver joins such a cluster as that address (Ray would otherwise join as the machine's network address,
    which no node of a loopback cluster has). Ray replaces 127.0.0.1 itself by the network address, so a
    loopback cluster runs on another address of 127.0.0.0/8 (``ray start --node-ip-address=127.0.0.2``)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:   # a host name
        return None


def plan_partitions(dataset: str | Path, count: int | None, method: str, overlap_m: float,
                    intrinsics: np.ndarray | None = None) -> list[Partition]:
    """The partitions of ``dataset``'s training frames (partition.make_partitions)."""
    frames = load_scene(dataset, intrinsics).frames("train")
    return make_partitions([f.name for f in frames], np.stack([f.pose for f in frames]), count, method, overlap_m)


def map_partitioned(dataset: str | Path, map_dir: str | Path, cfg: MappingConfig, parts: list[Partition],
                    force: bool = False, resume: bool = False, intrinsics: np.ndarray | None = None,
                    ray_address: str | None = None, workers: int | None = None, log=print) -> dict:
    """Map each of ``parts`` as a Ray task into ``map_dir/<part>/`` and write ``partitions.json``.

    Locally, ``workers`` tasks run at once (default: one per CPU, at most one per partition); each task
    asks for one CPU and runs one torch thread (and asks for one GPU when the cluster has GPUs). Returns
    the run's summary, also written as ``map_dir/scale_report.json``.
    """
    map_dir = Path(map_dir)
    refuse_to_overwrite(map_dir, force or resume, "use --force to overwrite or --resume to continue")
    info = {"dataset": str(Path(dataset).resolve()), "mapping_config": asdict(cfg)}
    if resume and (map_dir / LAYOUT_FILE).exists():
        old, _ = read_layout(map_dir)
        if [p.frames for p in old] != [p.frames for p in parts]:
            raise SceneLocError(f"{map_dir}: its partitions differ from these (other --partitions/--partition-by "
                                f"or dataset): map again with --force")
    elif resume:
        raise SceneLocError(f"{map_dir}: nothing to resume (no {LAYOUT_FILE})")
    map_dir.mkdir(parents=True, exist_ok=True)
    write_layout(map_dir, parts, info)
    codebook = routing_codebook(dataset, map_dir, resume, intrinsics, log)
    todo = [p for p in parts if not (resume and partition_done(map_dir / p.name))]
    for p in parts:
        if p not in todo:
            log(f"{p.name}: finished earlier, skipped (--resume)")
            if not routing_is_current(map_dir / p.name, codebook):   # e.g. made by an earlier sceneloc
                write_partition_routing(Path(dataset), map_dir / p.name, p.frames, codebook, intrinsics)
                log(f"{p.name}: routing descriptors refreshed")
    earlier = _earlier_summaries(map_dir, [p.name for p in parts if p not in todo]) if resume else []
    t0 = time.perf_counter()
    done, used = _map_on_ray(dataset, map_dir, cfg, todo, codebook, intrinsics, ray_address, workers, log) if todo \
        else ([], None)
    report = {"partitions": len(parts), "mapped": done, "mapped_earlier": earlier, "workers": used,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    (map_dir / "scale_report.json").write_text(json.dumps(report, indent=2))
    log(f"partitioned map written to {map_dir} ({len(parts)} partitions, {len(done)} mapped now, "
        f"{report['wall_seconds']:.0f} s)")
    return report


def _earlier_summaries(map_dir: Path, names: list[str]) -> list[dict]:
    """The task summaries of partitions ``names`` from the map's previous ``scale_report.json`` (a resumed
    run keeps what the run that mapped them measured)."""
    try:
        old = json.loads((map_dir / "scale_report.json").read_text())
    except (OSError, ValueError):
        return []
    runs = [*old.get("mapped", []), *old.get("mapped_earlier", [])] if isinstance(old, dict) else []
    return [r for r in runs if isinstance(r, dict) and r.get("name") in names]


def _map_on_ray(dataset: str | Path, map_dir: Path, cfg: MappingConfig, todo: list[Partition], codebook: np.ndarray,
                intrinsics: np.ndarray | None, ray_address: str | None, workers: int | None,
                log) -> tuple[list[dict], int | None]:
    """Map the partitions ``todo``, one Ray task each; their summaries, and the local workers (None on a cluster)."""
    cpus = os.cpu_count() or 1
    workers = max(1, min(workers or cpus, len(todo) or 1))
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    local = address is None
    ray = _start_ray(address, workers, log)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    # one torch thread per task, Ray's own convention for a 1-CPU task: more cores are used by more tasks at once.
    # Two threads per task on a busy 2-core machine filled a buffer ~10x slower than one (docs/scale.md)
    threads = 1
    memory = int(cfg.buffer_mb * 2 ** 20 * 1.2) + TASK_BASE_MEMORY_BYTES
    task = ray.remote(map_partition).options(num_cpus=1, num_gpus=gpus, memory=memory, max_retries=RETRIES,
                                             retry_exceptions=[RuntimeError, OSError, MemoryError])
    log(f"{len(todo)} partitions to map on Ray "
        f"({'local, ' + str(workers) + ' at once' if local else 'cluster'}; per task 1 CPU slot, {threads} torch "
        f"thread(s), {memory / 2 ** 30:.1f} GiB{', 1 GPU' if gpus else ''})")
    pending = {task.remote(str(Path(dataset).resolve()), str((map_dir / p.name).resolve()), cfg, p.frames, threads,
                           codebook, intrinsics): p.name for p in todo}
    done: list[dict] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            try:
                summary = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if isinstance(cause, SceneLocError):
                    raise SceneLocError(f"{name}: {cause}") from None
                first = str(cause).splitlines()[0] if str(cause) else ""
                raise SceneLocError(f"{name}: mapping failed after {RETRIES} retries ({type(cause).__name__}: "
                                    f"{first}); rerun with --resume") from None
            done.append(summary)
            log(f"{name}: mapped {summary['frames']} frames in {summary['seconds']:.0f} s on {summary['device']} "
                f"({len(done)}/{len(todo)} done)")
    finally:   # stops a local Ray; leaves a cluster, which keeps running
        ray.shutdown()
    return done, workers if local else None
