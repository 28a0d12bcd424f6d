"""Batches in the docs/contracts.md format: padding, length bucketing, and BPTT streams.

* ``collate(items)`` pads encoded items (``Encoder``) into a ``dict[str, Tensor]``.
* ``BucketBatchSampler`` groups items of similar length, deterministically from a seed, and can
  split the batches across ``world_size`` ranks.
* ``Batches`` ties the two together: an iterable of collated batches with ``set_epoch``, no
  DataLoader needed (a DataLoader with ``batch_sampler=BucketBatchSampler`` works too).
* ``LMStream`` cuts one long token stream into B parallel streams and serves consecutive
  (B, bptt) windows, so a trainer can carry the recurrent state from one batch to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["collate", "BucketBatchSampler", "Batches", "LMStream", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # tag / LM label at padding (torch.nn.functional.cross_entropy's default)


# ------------------------------------------------------------------------------ collate

def collate(items: Sequence[dict]) -> dict[str, Tensor]:
    """Pad a list of encoded items into a batch.

    ``inputs`` (B, T) int64 padded with 0, or (B, T, D) float32 padded with 0.0 for series;
    ``lengths`` (B,); ``labels`` (B,) int64 class ids, (B,) / (B, K) float32 targets, or (B, T)
    int64 per-token ids padded with -100, or (B, horizon, D_out) float32 forecast targets (arrays); ``chars`` (B, T, C) padded with 0; ``targets`` (B, T')
    padded with 0 and ``target_lengths`` (B,); ``condition`` (B,) int64 or (B, C) float32.
    Generator items have ``targets`` and ``condition`` but no ``inputs`` (so no ``lengths``).
    """
    if not items:
        raise ValueError("collate got an empty list of items")
    keys = set(items[0])
    for i, item in enumerate(items):
        if set(item) != keys:
            raise ValueError(f"items in one batch must have the same keys; item 0 has {sorted(keys)}, "
                             f"item {i} has {sorted(item)}")
    if "inputs" not in keys and "targets" not in keys:
        raise ValueError(f"items need an 'inputs' or a 'targets' key; got {sorted(keys)}")
    batch = {}
    if "inputs" in keys:
        lengths = [len(item["inputs"]) for item in items]
        if min(lengths) < 1:
            raise ValueError("every item needs at least one input step (lengths must be >= 1)")
        batch["inputs"] = _pad_inputs([item["inputs"] for item in items])
        batch["lengths"] = torch.tensor(lengths, dtype=torch.long)
    if "labels" in keys:
        batch["labels"] = _labels([item["labels"] for item in items])
    if "chars" in keys:
        batch["chars"] = _pad_chars([item["chars"] for item in items])
    if "targets" in keys:
        targets = [item["targets"] for item in items]
        batch["targets"] = _pad_ids(targets, 0)
        batch["target_lengths"] = torch.tensor([len(t) for t in targets], dtype=torch.long)
    if "condition" in keys:
        batch["condition"] = _labels([item["condition"] for item in items])
    return batch


def _pad_ids(seqs: Sequence[Sequence[int]], value: int) -> Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for b, s in enumerate(seqs):
        out[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def _pad_inputs(seqs: list) -> Tensor:
    if isinstance(seqs[0], (np.ndarray, Tensor)) and np.ndim(seqs[0]) == 2:  # series (T, D)
        D = seqs[0].shape[1]
        if any(s.shape[1] != D for s in seqs):
            raise ValueError(f"series in one batch must share D; got {sorted({s.shape[1] for s in seqs})}")
        out = torch.zeros(len(seqs), max(len(s) for s in seqs), D, dtype=torch.float32)  # (B, T, D)
        for b, s in enumerate(seqs):
            out[b, : len(s)] = torch.as_tensor(s, dtype=torch.float32)
        return out
    return _pad_ids(seqs, 0)


def _labels(labels: list) -> Tensor:
    first = labels[0]
    if isinstance(first, np.ndarray):
        if any(y.shape != first.shape for y in labels):  # (T, K) multi-hot frames: pad along T with 0
            out = torch.zeros(len(labels), max(len(y) for y in labels), *first.shape[1:], dtype=torch.float32)
            for b, y in enumerate(labels):
                out[b, : len(y)] = torch.as_tensor(y, dtype=torch.float32)
            return out  # (B, T, K)
        return torch.as_tensor(np.stack(labels), dtype=torch.float32)  # (B, horizon, D_out) forecasts
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], float):
        return torch.tensor(labels, dtype=torch.float32)  # (B, K) regression targets
    if isinstance(first, (list, tuple)):
        return _pad_ids(labels, IGNORE_INDEX)  # (B, T) tags or LM next tokens
    if isinstance(first, float):
        return torch.tensor(labels, dtype=torch.float32)  # (B,)
    return torch.tensor(labels, dtype=torch.long)  # (B,) class ids


def _pad_chars(chars: list) -> Tensor:
    T = max(len(words) for words in chars)
    C = max((len(w) for words in chars for w in words), default=1)
    out = torch.zeros(len(chars), T, max(C, 1), dtype=torch.long)  # (B, T, C)
    for b, words in enumerate(chars):
        for t, w in enumerate(words):
            out[b, t, : len(w)] = torch.as_tensor(w, dtype=torch.long)
    return out


# ------------------------------------------------------------------------------ bucketing

class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of indices with similar lengths, for ``DataLoader(batch_sampler=...)``.

    Each epoch: shuffle all indices (if ``shuffle``), cut them into chunks of
    ``batch_size * bucket_factor``, sort each chunk by length (longest first), cut chunks into
    batches and shuffle the order of the batches. Padding stays small while batches still vary
    from epoch to epoch. The order is a pure function of ``(seed, epoch)``; call
    ``set_epoch(e)`` before each epoch as with ``DistributedSampler``.

    With ``world_size = W > 1`` the batches are cut for all ranks at once: the *global* batches
    are exactly the ones a single process with ``batch_size * W`` would get (same seed, same
    chunks, same order), and rank r takes every W-th item of each, starting at item r. So one
    optimizer step of W processes sees the items one process sees with W times the batch, and
    a trainer that weights each rank's mean loss by its share (rnnkit's does) computes the same
    gradient. A global batch of fewer than W items (the short tail of a chunk) would leave a
    rank without one: it is skipped by every rank, so all take ``len(self)`` steps. A
    streaming source can shard the same way: cut global batches, then every W-th item.
    ``drop_last`` drops every short global batch.
    """

    def __init__(self, lengths: Sequence[int], *, batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 50, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        if not isinstance(bucket_factor, int) or bucket_factor < 1:
            raise ValueError(f"bucket_factor must be an int >= 1; got {bucket_factor!r}")
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int >= 1; got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, world_size={world_size}); got {rank!r}")
        self.lengths = [int(n) for n in lengths]
        if not self.lengths:
            raise ValueError("lengths is empty: nothing to batch")
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.bucket_factor = bucket_factor
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _all_batches(self) -> list[list[int]]:
        """The global batches of this epoch: of ``batch_size * world_size`` items."""
        n = len(self.lengths)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        size = self.batch_size * self.world_size
        chunk = size * self.bucket_factor
        batches = []
        for start in range(0, n, chunk):
            # sorted() is stable, so equal lengths keep their (shuffled) order.
            part = sorted(order[start:start + chunk], key=lambda i: -self.lengths[i])
            batches += [part[i:i + size] for i in range(0, len(part), size)]
        least = size if self.drop_last else self.world_size
        batches = [b for b in batches if len(b) >= least]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self):
        for batch in self._all_batches():
            yield batch[self.rank::self.world_size]

    def __len__(self) -> int:
        n, W = len(self.lengths), self.world_size
        size = self.batch_size * W
        chunk = size * self.bucket_factor
        full, rest = divmod(n, chunk)
        least = size if self.drop_last else W
        # per chunk: its full batches, and a short tail batch if it has enough items to keep
        per_chunk = chunk // size  # chunk is a multiple of size: no tail
        tail_full, tail_rest = divmod(rest, size)
        return full * per_chunk + tail_full + (1 if tail_rest and tail_rest >= least else 0)


class Batches:
    """Collated, length-bucketed batches over encoded items: ``for batch in Batches(items, ...)``.

    Takes the ``BucketBatchSampler`` arguments (``batch_size``, ``shuffle``, ``seed``,
    ``bucket_factor``, ``drop_last``, ``rank``, ``world_size``); ``set_epoch(e)`` reshuffles
    deterministically. Every batch is ``collate`` of the items of one sampler batch.
    """

    def __init__(self, items: Sequence[dict], *, batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 50, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if not items:
            raise ValueError("items is empty: nothing to batch")
        self.items = items
        lengths = [len(item["inputs"] if "inputs" in item else item["targets"]) for item in items]
        self.sampler = BucketBatchSampler(lengths, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                          bucket_factor=bucket_factor, drop_last=drop_last, rank=rank,
                                          world_size=world_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for indices in self.sampler:
            yield collate([self.items[i] for i in indices])


# ------------------------------------------------------------------------------ LM streams

class LMStream:
    """Consecutive (B, bptt) windows over one token stream, for truncated BPTT.

    The N - 1 (input, next token) pairs of the stream are cut into ``batch_size`` contiguous
    streams of ``(N - 1) // B`` or one more pairs each (so nothing is dropped), laid out as rows
    of a (B, L) grid. Window k is columns ``k*bptt .. (k+1)*bptt - 1``, so row b of window k+1
    continues row b of window k and the state can be carried over (detached) between batches.

    Each batch is ``{"inputs": (B, T), "labels": (B, T), "lengths": (B,)}`` with ``labels`` the
    next token of each input (inputs shifted by one); T = bptt except in the last window. When
    B does not divide N - 1, the shorter rows end with one padding step (input 0, label -100)
    in the last column, so the batches predict each of the N - 1 next tokens exactly once.
    ``lengths`` is T for every row: the streams carry state across windows, so a row is never
    "finished", and the only padding is that single final step, marked by label -100.
    """

    def __init__(self, ids: Sequence[int] | Tensor, *, batch_size: int, bptt: int):
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        if not isinstance(bptt, int) or bptt < 1:
            raise ValueError(f"bptt must be an int >= 1; got {bptt!r}")
        N = ids.numel()
        if N < batch_size + 1:
            raise ValueError(f"the token stream has {N} ids; B = batch_size = {batch_size} streams "
                             f"need at least B + 1 = {batch_size + 1}")
        self.batch_size = batch_size
        self.bptt = bptt
        self.num_tokens = N
        B = batch_size
        q, r = divmod(N - 1, B)  # the first r streams get q + 1 pairs, the rest q
        L = q + (1 if r else 0)
        b = torch.arange(B)[:, None]
        t = torch.arange(L)[None, :]
        start = b * q + torch.clamp(b, max=r)  # (B, 1) first position of each stream
        valid = t < q + (b < r).long()  # (B, L)
        positions = torch.where(valid, start + t, 0)
        self._inputs = torch.where(valid, ids[positions], 0)
        self._labels = torch.where(valid, ids[positions + 1], IGNORE_INDEX)
        self.stream_length = L

    def __len__(self) -> int:
        return math.ceil(self.stream_length / self.bptt)

    def __iter__(self):
        for start in range(0, self.stream_length, self.bptt):
            inputs = self._inputs[:, start:start + self.bptt]
            yield {"inputs": inputs, "labels": self._labels[:, start:start + self.bptt],
                   "lengths": torch.full((self.batch_size,), inputs.shape[1], dtype=torch.long)}
