"""Streaming (data.streaming): lazy readers, shards that partition the file, a bounded buffer,
batch counts known before reading, and the in-memory order when the buffer holds everything."""

import weakref
from collections import Counter

import pytest
import torch

from rnnkit.data import (Batches, iter_conll, iter_conllu, iter_delimited, iter_jsonl, iter_label_text,
                         iter_lm_text, iter_parallel)
from rnnkit.data.streaming import StreamingBatches, StreamingDataset, count_batches

# ---------------------------------------------------------------------------- lazy readers

# (the file's first lines, the reader) per format; ROW repeats below, BAD ends the file
GOOD = {
    "conll": ("", iter_conll), "conllu": ("", iter_conllu), "csv": ("text,label\n", iter_delimited),
    "tsv": ("text\tlabel\n", iter_delimited), "jsonl": ("", iter_jsonl), "label_text": ("", iter_label_text),
    "parallel": ("", iter_parallel), "lm_text": ("", iter_lm_text),
}
ROW = {"conll": "a O\nb B-X\n\n", "conllu": "1\ta\ta\tNOUN\t_\t_\t0\troot\t_\t_\n\n", "csv": "a b,pos\n",
       "tsv": "a b\tpos\n", "jsonl": '{"text": "a b", "label": "pos"}\n', "label_text": "pos a b\n",
       "parallel": "a b\tc d\n", "lm_text": "a b\n"}
BAD = {"conll": "a O extra\n", "conllu": "1\ta\n", "csv": 'a,"b\n', "tsv": "a\tb\tc\n",
       "jsonl": "{not json\n", "label_text": "lonely\n", "parallel": "no tab here\n", "lm_text": None}


@pytest.mark.parametrize("fmt", sorted(GOOD))
def test_a_lazy_reader_yields_the_first_example_before_reading_the_rest(tmp_path, fmt):
    head, reader = GOOD[fmt]
    rows = 3000  # many 64 KB blocks ahead of the end
    f = tmp_path / f"data.{fmt}"
    bad = BAD[fmt] or ""
    f.write_text(head + ROW[fmt] * rows + bad)
    examples = reader(f)
    first = next(examples)  # a reader that read everything first would fail on the last line here
    assert first is not None
    if BAD[fmt] is None:
        return
    lines = (head + ROW[fmt] * rows).count("\n")
    with pytest.raises(ValueError, match=rf"^{f}:{lines + 1}: "):
        list(examples)


# ---------------------------------------------------------------------------- the dataset

def read_ids(n):
    return lambda: iter(range(n))


class Item(dict):
    """An encoded item that weakref can follow, to count the items alive at any moment."""

    __slots__ = ("__weakref__",)


def encode(i: int) -> dict:
    return Item(inputs=[i + 1] * (1 + i % 7))  # the id, repeated: lengths vary, ids survive batching


def ids_of(batch: dict) -> list[int]:
    return [int(row[0]) - 1 for row in batch["inputs"]]


def dataset(n, **kw) -> StreamingDataset:
    options = dict(num_examples=n, batch_size=4, shuffle_buffer=16, seed=3)
    options.update(kw)
    return StreamingDataset(read_ids(n), encode, **options)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_ranks_shards_partition_the_file(world):
    n = 101
    seen = []
    for rank in range(world):
        seen.append([i for batch in dataset(n, rank=rank, world_size=world) for i in ids_of(batch)])
    assert sorted(i for ids in seen for i in ids) == list(range(n))  # every example once: a partition
    for rank, ids in enumerate(seen):
        assert all(i % world == rank for i in ids)


def test_dataloader_workers_split_a_rank_shard_without_overlap():
    n, seen = 57, []
    for rank in range(2):  # shards rank * 2 + worker: rank 0 holds shards 0 and 1, rank 1 shards 2 and 3
        source = dataset(n, num_workers=2, rank=rank, world_size=2)
        batches = list(torch.utils.data.DataLoader(source, batch_size=None, num_workers=2))
        ids = [i for batch in batches for i in ids_of(batch)]
        assert sorted(ids) == [i for i in range(n) if i % 4 in (2 * rank, 2 * rank + 1)]  # each once
        assert len(batches) == source.rank_batches(rank)
        seen += ids
    assert sorted(seen) == list(range(n))


def test_a_dataloader_with_another_worker_count_is_an_error():
    with pytest.raises(ValueError, match="made for num_workers=0 but is read by 1"):
        list(torch.utils.data.DataLoader(dataset(9), batch_size=None, num_workers=1))


@pytest.mark.parametrize("n, batch, buffer, world, workers", [
    (1, 1, 1, 1, 0), (100, 4, 16, 1, 0), (100, 4, 17, 1, 0), (101, 3, 10, 2, 0), (400, 8, 100, 3, 0),
    (40, 4, 8, 1, 2), (41, 4, 9, 2, 2)])
def test_the_batch_count_is_known_before_reading(n, batch, buffer, world, workers):
    for rank in range(world):
        source = dataset(n, batch_size=batch, shuffle_buffer=buffer, rank=rank, world_size=world,
                         num_workers=workers, bucket_factor=2)
        shards = range(rank * max(workers, 1), (rank + 1) * max(workers, 1))
        read = sum(1 for shard in shards for _ in source._pass(shard))
        assert read == source.rank_batches(rank)
        assert len(StreamingBatches(source)) == source.rank_batches(0) >= read


def test_every_rank_takes_as_many_steps_as_rank_0():
    # 5 examples, 2 ranks, batches of 2: rank 0 holds 3 (2 batches), rank 1 holds 2 (1 batch)
    counts, firsts = [], []
    for rank in range(2):
        batches = list(StreamingBatches(dataset(5, batch_size=2, shuffle_buffer=2, rank=rank, world_size=2)))
        counts.append(len(batches))
        firsts.append(batches)
    assert counts == [2, 2]
    assert torch.equal(firsts[1][1]["inputs"], firsts[1][0]["inputs"])  # rank 1 repeats its first batch


def test_the_buffer_holds_at_most_buffer_plus_one_batch_items():
    alive = Counter()

    def tracked(i):
        item = encode(i)
        alive["now"] += 1
        weakref.finalize(item, alive.subtract, ["now"])
        return item

    n, buffer, batch = 500, 24, 4
    source = StreamingDataset(read_ids(n), tracked, num_examples=n, batch_size=batch, shuffle_buffer=buffer)
    most = 0
    for _ in source:
        most = max(most, alive["now"])
    assert 0 < most <= buffer + batch
    assert source.held_ <= buffer + batch
    assert alive["now"] <= buffer  # only the last window can still be referenced


def test_a_buffer_holding_everything_batches_as_the_in_memory_batches_do():
    n = 90
    items = [encode(i) for i in range(n)]
    for epoch in (1, 2):
        memory = Batches(items, batch_size=4, shuffle=True, seed=3)
        memory.set_epoch(epoch)
        streamed = dataset(n, shuffle_buffer=n)
        streamed.set_epoch(epoch)
        assert [ids_of(b) for b in streamed] == [ids_of(b) for b in memory]


def test_without_shuffle_windows_of_whole_chunks_batch_as_the_in_memory_batches_do():
    n, batch, factor = 103, 4, 3
    items = [encode(i) for i in range(n)]
    memory = Batches(items, batch_size=batch, shuffle=False, bucket_factor=factor)
    streamed = dataset(n, batch_size=batch, shuffle=False, bucket_factor=factor, shuffle_buffer=2 * batch * factor)
    assert [ids_of(b) for b in streamed] == [ids_of(b) for b in memory]


def test_a_small_buffer_shuffles_within_windows_and_differs_by_epoch():
    source = dataset(64, shuffle_buffer=16)
    orders = []
    for epoch in (1, 2):
        source.set_epoch(epoch)
        orders.append([ids_of(b) for b in source])
    assert orders[0] != orders[1]
    for order in orders:  # each batch comes from one window of 16 consecutive examples
        assert all(len({i // 16 for i in ids}) == 1 for ids in order)


def test_a_file_that_changed_since_it_was_counted_is_an_error():
    source = StreamingDataset(read_ids(10), encode, num_examples=12, batch_size=4, shuffle_buffer=8)
    with pytest.raises(ValueError, match="gave 10 examples in this pass but 12 when it was counted"):
        list(source)


def test_too_few_examples_for_the_shards_is_an_error():
    with pytest.raises(ValueError, match="3 training example.s. cannot feed 4 shards"):
        StreamingBatches(dataset(3, rank=0, world_size=2, num_workers=2))


@pytest.mark.parametrize("kw, message", [
    (dict(shuffle_buffer=2), r"shuffle_buffer \(2\) must hold at least one batch"),
    (dict(num_workers=-1), "num_workers must be an int >= 0"),
    (dict(rank=2, world_size=2), r"rank must be in \[0, world_size=2\)"),
])
def test_bad_arguments_name_themselves(kw, message):
    with pytest.raises(ValueError, match=message):
        dataset(10, **kw).place() if "rank" in kw else dataset(10, **kw)


def test_count_batches_is_the_bucket_sampler_count():
    from rnnkit.data import BucketBatchSampler

    for n in (1, 7, 50, 200, 201):
        assert count_batches(n, batch_size=4, bucket_factor=5) == len(
            BucketBatchSampler([1] * n, batch_size=4, bucket_factor=5))


def test_rank_and_world_size_come_from_torch_distributed_when_it_is_initialised(monkeypatch):
    import torch.distributed as dist

    n = 30
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "get_rank", lambda: 2)
    source = dataset(n)
    assert source.place() == (2, 3)
    assert sorted(i for batch in source for i in ids_of(batch)) == list(range(2, n, 3))
