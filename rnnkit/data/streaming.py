"""Batches from a file read lazily, for training data larger than memory (``data.streaming``).

    source = StreamingDataset(lambda: iter_conll("big.conll"), Encoder(vocab=words, label_vocab=tags),
                              num_examples=n, batch_size=32, shuffle_buffer=10_000, seed=0)
    for batch in StreamingBatches(source, num_workers=2): ...     # or DataLoader(source, batch_size=None)

Each pass reads the file from its start: read -> keep this shard's examples -> encode -> a
buffer of ``shuffle_buffer`` items -> when it is full (and at the end), the buffer is batched
exactly as ``BucketBatchSampler`` batches a whole in-memory data set (shuffle, sort chunks of
``batch_size * bucket_factor`` by length, cut, shuffle the batches), seeded by ``(seed, epoch,
window, shard)`` -> collate. So at most ``shuffle_buffer`` encoded items are held, plus the batch
being collated, and a buffer that holds the whole file gives the in-memory order exactly.

Shards. Example ``i`` of the file (0-based, counted in file order) belongs to shard ``i % S``,
``S = world_size * max(num_workers, 1)``; the shard of DataLoader worker ``w`` of rank ``r`` is
``r * max(num_workers, 1) + w``. Every shard scans the whole file (a line's number is only known
by reading the lines before it, and a malformed line anywhere is an error in every shard) but
encodes and keeps only its own examples, so the shards are a partition: no example is used twice
in an epoch, none is left out. Rank and world size come from ``torch.distributed`` when it is
initialised, else 0 and 1.

Counting. The number of examples ``num_examples`` comes from a pass made beforehand (the
vocabulary pass), so the number of batches of every shard is known before reading: the trainer's
progress bar and steps per epoch. A pass that reads a different number of examples (the file
changed) is an error. Under DDP every rank must take the same number of steps, so a rank whose
shards yield fewer batches than rank 0's repeats its first batches to make up the difference
(at most one per shard), as ``BucketBatchSampler`` does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator

import torch

from .batching import BucketBatchSampler, collate

__all__ = ["StreamingDataset", "StreamingBatches", "StreamingLM", "count_batches"]

# Distinct generator seeds for each (window, shard) of a pass; window 0 of shard 0 uses ``seed``
# itself, which is what makes a buffer holding the whole file equal the in-memory order.
_WINDOW_STRIDE = 1_000_033


def count_batches(n: int, *, batch_size: int, bucket_factor: int = 50) -> int:
    """Batches ``BucketBatchSampler`` makes of ``n`` items (one rank, no ``drop_last``)."""
    chunk = batch_size * bucket_factor
    full, rest = divmod(n, chunk)
    return full * math.ceil(chunk / batch_size) + math.ceil(rest / batch_size)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StreamingDataset(torch.utils.data.IterableDataset):
    """The batches of one shard of a lazily read file (see the module docstring).

    Args:
        read: ``read()`` returns a fresh iterator over the file's examples, in file order (for
            DataLoader workers it must be picklable: a function or a dataclass, not a lambda,
            unless the workers are forked).
        encode: example -> item (an ``Encoder``).
        num_examples: how many examples ``read()`` yields (counted beforehand).
        batch_size, bucket_factor, seed: as ``BucketBatchSampler``.
        shuffle_buffer: encoded items held at once; each full buffer is shuffled and bucketed.
        shuffle: shuffle within the buffer (False: file order, chunks still sorted by length).
        num_workers: the DataLoader workers this dataset will be read by (0: read in the calling
            process); a worker count that differs at iteration time is an error.
        rank, world_size: this process's place; None: from ``torch.distributed`` if initialised.

    ``set_epoch(e)`` reseeds the shuffle; ``held_`` is the most encoded items the last pass of
    this process held at once (for tests and benchmarks).
    """

    def __init__(self, read: Callable[[], Iterable], encode: Callable, *, num_examples: int,
                 batch_size: int, shuffle_buffer: int, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 50, num_workers: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__()
        for name, value, low in (("num_examples", num_examples, 1), ("batch_size", batch_size, 1),
                                 ("shuffle_buffer", shuffle_buffer, 1), ("bucket_factor", bucket_factor, 1),
                                 ("num_workers", num_workers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        if shuffle_buffer < batch_size:
            raise ValueError(f"shuffle_buffer ({shuffle_buffer}) must hold at least one batch "
                             f"(batch_size {batch_size})")
        self.read, self.encode = read, encode
        self.num_examples, self.batch_size, self.shuffle_buffer = num_examples, batch_size, shuffle_buffer
        self.shuffle, self.seed, self.bucket_factor = bool(shuffle), int(seed), bucket_factor
        self.num_workers = num_workers
        self._rank, self._world = rank, world_size
        self.epoch = 0
        self.held_ = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def place(self) -> tuple[int, int]:
        """(rank, world size) of this process."""
        if self._rank is not None or self._world is not None:
            world = self._world if self._world is not None else 1
            rank = self._rank if self._rank is not None else 0
            if not 0 <= rank < world:
                raise ValueError(f"rank must be in [0, world_size={world}); got {rank}")
            return rank, world
        return _rank_world()

    @property
    def num_shards(self) -> int:
        return self.place()[1] * max(self.num_workers, 1)

    def shard_examples(self, shard: int) -> int:
        """Examples of shard ``shard``: those ``i`` with ``i % num_shards == shard``."""
        return max(0, math.ceil((self.num_examples - shard) / self.num_shards))

    def shard_batches(self, shard: int) -> int:
        """Batches shard ``shard`` yields in a pass: its full buffers and the rest, each batched."""
        n, size = self.shard_examples(shard), self.shuffle_buffer
        full, rest = divmod(n, size)
        per_buffer, last = (count_batches(m, batch_size=self.batch_size, bucket_factor=self.bucket_factor)
                            for m in (size, rest))
        return full * per_buffer + last

    def rank_batches(self, rank: int) -> int:
        """Batches all the workers of rank ``rank`` yield in a pass."""
        workers = max(self.num_workers, 1)
        return sum(self.shard_batches(rank * workers + w) for w in range(workers))

    def __iter__(self) -> Iterator[dict]:
        rank, _ = self.place()
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (0, 0)
        if workers != self.num_workers:
            raise ValueError(f"this StreamingDataset was made for num_workers={self.num_workers} but is "
                             f"read by {workers} DataLoader worker(s); give the DataLoader's count")
        return self._pass(rank * max(workers, 1) + worker)

    def _pass(self, shard: int) -> Iterator[dict]:
        shards, size = self.num_shards, self.shuffle_buffer
        buffer: list[dict] = []
        window, seen, mine, truncated, first_cut = 0, 0, 0, 0, None
        self.held_ = 0
        for i, example in enumerate(self.read()):
            seen += 1
            if i % shards != shard:
                continue
            buffer.append(self.encode(example))
            mine += 1
            cut = getattr(self.encode, "truncated_", None)
            if cut:  # the Encoder lists every cut sequence: keep the count, not the list
                first_cut = first_cut or cut[0]
                truncated += len(cut)
                cut.clear()
            if len(buffer) == size:
                yield from self._batches(buffer, window, shard)
                buffer, window = [], window + 1
        if buffer:
            yield from self._batches(buffer, window, shard)
        if seen != self.num_examples:
            raise ValueError(f"the training file gave {seen:,} examples in this pass but {self.num_examples:,} "
                             "when it was counted; it changed while training read it")
        if truncated:
            warnings.warn(f"truncated {truncated} of {mine} sequence(s) of shard {shard} to the length "
                          f"limits (truncate=True); first at {first_cut}", stacklevel=2)

    def _batches(self, buffer: list[dict], window: int, shard: int) -> Iterator[dict]:
        lengths = [len(item["inputs"] if "inputs" in item else item["targets"]) for item in buffer]
        sampler = BucketBatchSampler(lengths, batch_size=self.batch_size, shuffle=self.shuffle,
                                     seed=self.seed + _WINDOW_STRIDE * (window * self.num_shards + shard),
                                     bucket_factor=self.bucket_factor)
        sampler.set_epoch(self.epoch)
        for indices in sampler:
            self.held_ = max(self.held_, len(buffer) + len(indices))
            yield collate([buffer[i] for i in indices])


class StreamingBatches:
    """What the trainer iterates: the batches of this rank's shards, read in this process or by
    ``num_workers`` DataLoader workers (the dataset's count), with ``len`` known before reading
    and, under DDP, every rank taking as many steps as rank 0."""

    def __init__(self, dataset: StreamingDataset) -> None:
        last = dataset.num_shards - 1
        if dataset.shard_examples(last) == 0:
            raise ValueError(f"{dataset.num_examples} training example(s) cannot feed {dataset.num_shards} "
                             "shards (processes x loader workers); use fewer data.num_workers or processes")
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.dataset.rank_batches(0)  # rank 0 holds the most examples (shards 0, 1, ...)

    def _source(self) -> Iterable[dict]:
        if self.dataset.num_workers == 0:
            return self.dataset
        return torch.utils.data.DataLoader(self.dataset, batch_size=None, num_workers=self.dataset.num_workers)

    def __iter__(self) -> Iterator[dict]:
        rank, _ = self.dataset.place()
        short = len(self) - self.dataset.rank_batches(rank)  # batches to repeat at the end
        first: list[dict] = []
        for batch in self._source():
            if len(first) < short:
                first.append(batch)
            yield batch
        yield from first[:short]


# ------------------------------------------------------------------------------ LM streams

class StreamingLM:
    """``LMStream``'s windows over a token stream read from a file, never held whole.

    ``LMStream`` cuts the N - 1 (input, next token) pairs of the stream into B contiguous rows
    and serves consecutive (B, bptt) windows, so that row b of window k + 1 continues row b of
    window k. Here each row reads the file from its own starting token: ``read(start)`` yields
    the token lists of the lines from ``start = (byte offset, line number)`` on, and ``index``
    lists ``(byte offset, line number, tokens before that line)`` every so many lines (made by
    the counting pass), so a row seeks to the nearest line before its first token and skips the
    rest. The windows are exactly ``LMStream(ids, batch_size, bptt)``'s. Under DDP (rank and
    world size from ``torch.distributed`` unless given) rank r reads its contiguous share of
    the stream, as the in-memory run does: ``N // world`` pairs each, so every rank takes the
    same number of steps. There is no shuffle (an LM stream is read in order) and no loader
    worker: the B readers live in the training process.
    """

    def __init__(self, read: Callable[[tuple[int, int]], Iterable[list[str]]], encode: Callable[[list[str]], list[int]],
                 *, index: list[tuple[int, int, int]], num_tokens: int, batch_size: int, bptt: int,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if not index or index[0][2] != 0:
            raise ValueError("index must start at the first line: (offset, line, 0 tokens before)")
        self.read, self.encode, self.index = read, encode, index
        self.num_tokens, self.batch_size, self.bptt = num_tokens, batch_size, bptt
        self._rank, self._world = rank, world_size
        lo, hi = self._share()
        if hi - lo < batch_size + 1:
            raise ValueError(f"the token stream has {hi - lo} ids for this process; B = batch_size = {batch_size} "
                             f"streams need at least B + 1 = {batch_size + 1}")
        q, r = divmod(hi - lo - 1, batch_size)  # the first r rows get q + 1 pairs, the rest q
        self._rows = [(lo + b * q + min(b, r), q + (1 if b < r else 0)) for b in range(batch_size)]
        self.stream_length = q + (1 if r else 0)

    def _share(self) -> tuple[int, int]:
        rank, world = (self._rank or 0, self._world or 1) if self._world is not None else _rank_world()
        if world == 1:
            return 0, self.num_tokens
        share = self.num_tokens // world  # as run._lm_stream splits the in-memory stream
        return rank * share, min((rank + 1) * share + 1, self.num_tokens)  # a slice's end

    def set_epoch(self, epoch: int) -> None:
        """The stream is read in order every epoch (as ``LMStream``); nothing to reseed."""

    def __len__(self) -> int:
        return math.ceil(self.stream_length / self.bptt)

    def _ids_from(self, position: int) -> Iterator[int]:
        import bisect

        j = bisect.bisect_right([before for _, _, before in self.index], position) - 1
        offset, line, before = self.index[j]
        skip = position - before
        for tokens in self.read((offset, line)):
            if skip >= len(tokens):
                skip -= len(tokens)
                continue
            yield from self.encode(tokens[skip:])
            skip = 0

    def __iter__(self) -> Iterator[dict]:
        from .batching import IGNORE_INDEX

        B, L = self.batch_size, self.stream_length
        readers = [self._ids_from(start) for start, _ in self._rows]

        def take(b: int) -> int:
            token = next(readers[b], None)
            if token is None:
                raise ValueError(f"the training file ended before token {self._rows[b][0]:,} + "
                                 f"{self._rows[b][1]:,} of row {b}; it changed since its tokens were counted")
            return token

        current = [take(b) for b in range(B)]  # each row's next input token
        for start in range(0, L, self.bptt):
            T = min(self.bptt, L - start)
            inputs = torch.zeros(B, T, dtype=torch.long)
            labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
            for b, (_, pairs) in enumerate(self._rows):
                steps = min(T, pairs - start)  # a shorter row ends one step early, padded
                if steps <= 0:
                    continue
                row = [current[b]]
                for _ in range(steps):
                    row.append(take(b))
                inputs[b, :steps] = torch.tensor(row[:-1])
                labels[b, :steps] = torch.tensor(row[1:])
                current[b] = row[-1]
            yield {"inputs": inputs, "labels": labels, "lengths": torch.full((B,), T, dtype=torch.long)}
