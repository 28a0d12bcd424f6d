"""What a training process needs to work beside others under torchrun, and on its device.

* ``setup_distributed`` joins the process group torchrun describes (gloo on the CPU, nccl on
  CUDA, or as asked) and ``resolve_device`` names the process's device (``cuda:LOCAL_RANK``);
* ``shard_rows`` is a process's share of a global batch (rows rank, rank + W, ...), the way
  ``BucketBatchSampler`` cuts its global batches;
* ``loss_count`` and ``global_mean_loss`` weight each process's mean loss by its share of
  what the head averages over, so that DistributedDataParallel's average of the W gradients is
  the gradient of the global batch's mean loss.
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["setup_distributed", "resolve_device", "shard_rows", "loss_count", "global_mean_loss"]


def batch_rows(batch: dict) -> int:
    return int(batch["inputs" if "inputs" in batch else "targets"].shape[0])


def loss_count(model: nn.Module, batch: dict) -> int:
    """What ``model.loss(batch)`` is a mean over: ``model.loss_count(batch)`` (labelled tokens,
    for a token mean) if the head says, else the batch's rows."""
    count = getattr(model, "loss_count", None)
    if callable(count):
        return int(count(batch))
    return batch_rows(batch)


def shard_rows(batch: dict, rank: int, world: int) -> dict:
    """Rows rank, rank + world, ... of a batch dict (every tensor is batch-first)."""
    return {k: (v[rank::world] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in batch.items()}


def global_mean_loss(loss, n: int, *, world: int, device, step: int):
    """This process's loss, weighted so that DistributedDataParallel's average of the W
    gradients is the gradient of the global batch's mean loss; and that mean's value.

    With n_r what rank r's loss is a mean over and N = sum n_r, rank r backpropagates
    loss_r * n_r * W / N: the average over ranks is sum_r n_r loss_r / N, the global mean,
    even when ranks hold different numbers of tokens. One all-reduce of two numbers."""
    import torch.distributed as dist

    shares = torch.tensor([float(loss.detach()) * n, float(n)], dtype=torch.float64, device=device)
    dist.all_reduce(shares)
    total, count = float(shares[0]), float(shares[1])
    if count == 0:
        raise ValueError(f"step {step}: the global batch has nothing to learn from (no labelled token on "
                         "any process)")
    return loss * (n * world / count), total / count


def resolve_device(device: str = "auto") -> torch.device:
    """The ``torch.device`` that ``trainer.device`` names: ``auto`` is ``cuda:LOCAL_RANK`` when
    CUDA is there, else the CPU; ``cuda`` and ``mps`` must be there."""
    from .._checks import check_choice

    check_choice("trainer.device", device, ("auto", "cpu", "cuda", "mps"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device is 'cuda' but torch sees no CUDA device "
                             f"(torch {torch.__version__}, torch.cuda.is_available() is False); use auto or cpu")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; start "
                             "at most that many processes per node")
        return torch.device("cuda", local)
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("trainer.device is 'mps' but torch.backends.mps.is_available() is False; use auto or cpu")
    return torch.device(device)


def setup_distributed(backend: str = "auto", device: str = "auto") -> tuple[int, int]:
    """(rank, world size); joins the process group that torchrun describes in the environment
    (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). ``backend``: ``auto`` is nccl when
    the run's ``device`` resolves to CUDA, gloo otherwise; ``gloo`` or ``nccl`` by name."""
    from .._checks import check_choice

    check_choice("trainer.backend", backend, ("auto", "gloo", "nccl"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        where = resolve_device(device)
        if backend == "auto":
            backend = "nccl" if where.type == "cuda" else "gloo"
        if backend == "nccl" and where.type != "cuda":
            raise ValueError(f"trainer.backend 'nccl' runs on CUDA devices only; this run's device is {where}. "
                             "Use backend gloo (or auto) on the CPU")
        if where.type == "cuda":
            torch.cuda.set_device(where)  # nccl and the *_object collectives use the current device
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()
