"""Multi-process runs on `torch.distributed` (launched by `torchrun`): one process per GPU/CPU slot.

`train` and `reconstruct` switch to their distributed path whenever a default process group is
initialised (`torch.distributed.is_initialized()`); the CLI initialises one with `session()` when
it detects a `torchrun` launch (WORLD_SIZE, RANK, LOCAL_RANK in the environment). Backend: NCCL
when the rank's device is a CUDA GPU (`cuda:LOCAL_RANK`), gloo otherwise.

Helpers here are small and stateless: they read the process group torch keeps, never a global
of their own. Every collective is called by all ranks in the same order; input errors are made
collective with `agree` so that no rank waits forever in a collective another rank never reaches.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import errors
from .data.normalize import factor_from_energy, pattern_energy, pattern_occurrences
from .data.normalize import normalization_factor as plain_normalization_factor
from .errors import ConfigError, PtychoPINNError

__all__ = [
    "DistInfo",
    "launched_by_torchrun",
    "env_info",
    "current",
    "rank_device",
    "session",
    "agree",
    "all_reduce_sum",
    "barrier",
    "shard_batch",
    "contiguous_shard",
    "normalization_factor",
]

_ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global rank, world size, node-local rank."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files, logs and progress."""
        return self.rank == 0


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """True when WORLD_SIZE, RANK and LOCAL_RANK are set (torchrun / torch.distributed.run)."""
    env = os.environ if environ is None else environ
    return all(k in env for k in _ENV_KEYS)


def env_info(environ: dict[str, str] | None = None) -> DistInfo:
    """DistInfo from the torchrun environment variables (ConfigError naming a malformed one)."""
    env = os.environ if environ is None else environ
    values = {}
    for k in _ENV_KEYS:
        try:
            values[k] = int(env[k])
        except (KeyError, ValueError):
            raise ConfigError(f"environment variable {k}={env.get(k)!r}: expected an integer (set by torchrun)") from None
    info = DistInfo(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ConfigError(f"torchrun environment: RANK={info.rank}, WORLD_SIZE={info.world_size}, LOCAL_RANK={info.local_rank} are inconsistent")
    return info


def current() -> DistInfo | None:
    """The running job (from the initialised default process group), or None (single process)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def rank_device(spec: str | torch.device | None, local_rank: int) -> torch.device:
    """This rank's device: "auto"/"cuda" → `cuda:LOCAL_RANK` when CUDA exists (auto: else CPU);
    "cpu" → CPU. An explicit "cuda:<i>" is refused (the launcher picks the GPU through LOCAL_RANK)."""
    name = "auto" if spec is None else str(spec).strip().lower()
    if name in ("auto", "cuda"):
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise ConfigError(f"LOCAL_RANK={local_rank} but this node has only {count} CUDA device(s); start at most {count} processes per node")
            return torch.device("cuda", local_rank)
        if name == "cuda":
            raise ConfigError("device: 'cuda' requested but CUDA is not available (use 'auto' or 'cpu')")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda:"):
        raise ConfigError(f"device: {spec!r} under torchrun; pass 'cuda' or 'auto' (each process uses cuda:LOCAL_RANK)")
    raise ConfigError(f"device: {spec!r} is not supported in a distributed run; use 'auto', 'cuda' or 'cpu'")


@contextlib.contextmanager
def session(device: str | torch.device | None = "auto", *, timeout_s: float | None = None) -> Iterator[DistInfo | None]:
    """Initialise the default process group from the torchrun environment for the block.

    Yields None (and does nothing) when not launched by torchrun or when a group already exists
    (its owner manages it). Backend NCCL for CUDA devices, gloo for CPU; the group is destroyed
    on exit, also after an error.
    """
    dist = torch.distributed
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ConfigError("torchrun launch detected, but this torch build has no torch.distributed")
    info = env_info()
    dev = rank_device(device, info.local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kwargs: dict[str, Any] = {"backend": backend}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    if dev.type == "cuda":
        kwargs["device_id"] = dev
    dist.init_process_group(**kwargs)
    try:
        yield info
        # unreachable DDP wrappers (their reducers hold the group's work objects) are freed while
        # the group still exists, not by a later collection after it is destroyed
        gc.collect()
        dist.barrier()  # nobody tears the group down while another rank is still talking
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def agree(error: BaseException | None) -> None:
    """Collective error check: every rank calls it; if any rank passes an error, all raise.

    The raising ranks re-raise their own error; the others raise the same ptychopinn error class
    with the first failing rank's message. No-op outside a distributed run.
    """
    info = current()
    if info is None:
        if error is not None:
            raise error
        return
    mine = None if error is None else (type(error).__name__, str(error))
    gathered: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(gathered, mine)
    if error is not None:
        raise error
    for r, item in enumerate(gathered):
        if item is not None:
            name, message = item
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, PtychoPINNError)):
                cls = ConfigError
                message = f"rank {r} failed: {name}: {message}"
            raise cls(message)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (no-op in a single process); returns `t`."""
    if current() is not None:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def sum_gradients_hook(state, bucket):  # unannotated: DDP checks the annotations
    """DDP communication hook: SUM the gradient bucket over ranks (DDP's default averages).

    Training weights each shard's loss by the whole batch's size, so the sum is the gradient
    of the global batch (no rescaling by the world size, which is inexact for non-powers of 2).
    """
    tensor = bucket.buffer()
    fut = torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if current() is not None:
        torch.distributed.barrier()


def shard_batch(global_batch: Sequence[int] | np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's groups of one global batch: the rank-strided slice `batch[rank::world_size]`.

    Shards differ in size by at most one and may be empty (when the batch is shorter than the
    world size); the caller weights each shard's loss by its share of the global batch.
    """
    return np.asarray(global_batch, dtype=np.int64)[rank::world_size]


def contiguous_shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of this rank's block of `n` items (blocks differ in size by at most one)."""
    return (rank * n) // world_size, ((rank + 1) * n) // world_size


def normalization_factor(
    diffraction: Any, indices: np.ndarray, device: torch.device | None = None, *, bad_pixels: np.ndarray | None = None
) -> np.float32:
    """`data.normalization_factor(diffraction, indices)` with each rank reading only its share.

    The distinct patterns are split into contiguous blocks of sorted rows; each rank sums the
    occurrence-weighted energies of its block (float64) and the sums are all-reduced, so no rank
    reads the whole scan. Single process: the plain function.
    """
    info = current()
    if info is None:
        return plain_normalization_factor(diffraction, indices, bad_pixels=bad_pixels)
    rows, counts = pattern_occurrences(diffraction, indices)
    if counts is None:
        counts = np.ones(rows.size, dtype=np.int64)
    a, b = contiguous_shard(rows.size, info.rank, info.world_size)
    energy = pattern_energy(diffraction, rows[a:b], bad_pixels=bad_pixels)
    part = torch.tensor([float(energy @ counts[a:b]), float(counts[a:b].sum())], dtype=torch.float64, device=device)
    all_reduce_sum(part)
    return factor_from_energy(float(part[0]), float(part[1]), int(diffraction.shape[-1]))
