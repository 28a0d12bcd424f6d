"""Encoder, collate, bucketing sampler and LM streams: the docs/contracts.md batch format."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rnnkit.data import (IGNORE_INDEX, Batches, BucketBatchSampler, Encoder, LMStream, PairExample,
                         SeriesExample, TaggedExample, TextExample, Vocab, collate)

WORDS = Vocab().fit([["a", "b", "c", "d"]])  # ids: a=4 b=5 c=6 d=7
TAGS = Vocab.for_labels(["N", "V"], name="tag")
CLASSES = Vocab.for_labels(["neg", "pos"])


def test_classification_batch():
    examples = [TextExample(["a", "b", "c"], "pos", "t:1"), TextExample(["d"], "neg", "t:2")]
    batch = collate(Encoder(vocab=WORDS, label_vocab=CLASSES).encode_all(examples))
    assert set(batch) == {"inputs", "lengths", "labels"}
    assert batch["inputs"].tolist() == [[4, 5, 6], [7, 0, 0]] and batch["inputs"].dtype == torch.long
    assert batch["lengths"].tolist() == [3, 1] and batch["labels"].tolist() == [1, 0]
    assert batch["labels"].dtype == torch.long


def test_regression_labels_are_float():
    examples = [TextExample(["a"], 0.5), TextExample(["b"], 2.0)]
    batch = collate(Encoder(vocab=WORDS).encode_all(examples))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 2.0]
    vector = collate(Encoder(vocab=WORDS).encode_all([TextExample(["a"], [1.0, 2.0])]))
    assert vector["labels"].shape == (1, 2)


def test_tagging_batch_pads_labels_with_minus_100_and_chars_with_0():
    chars = Vocab(specials=("<pad>", "<unk>"), name="char").fit_chars([["ab", "c"]])  # a=2 b=3 c=4
    examples = [TaggedExample(["a", "b"], ["N", "V"]), TaggedExample(["ab"], ["V"])]
    batch = collate(Encoder(vocab=WORDS, label_vocab=TAGS, char_vocab=chars).encode_all(examples))
    assert batch["labels"].tolist() == [[0, 1], [1, IGNORE_INDEX]]
    assert batch["chars"].shape == (2, 2, 2)
    assert batch["chars"].tolist() == [[[2, 0], [3, 0]], [[2, 3], [0, 0]]]


def test_seq2seq_targets_have_bos_eos_and_lengths():
    target = Vocab().fit([["x", "y"]])  # x=4 y=5
    examples = [PairExample(["a"], ["x", "y"]), PairExample(["b", "c"], ["y"])]
    batch = collate(Encoder(vocab=WORDS, target_vocab=target).encode_all(examples))
    assert batch["targets"].tolist() == [[2, 4, 5, 3], [2, 5, 3, 0]]
    assert batch["target_lengths"].tolist() == [4, 3] and batch["lengths"].tolist() == [1, 2]


def test_sentence_lm_labels_are_inputs_shifted_by_one():
    batch = collate(Encoder(vocab=WORDS, lm=True).encode_all([TextExample(["a", "b"]), TextExample(["c"])]))
    assert batch["inputs"].tolist() == [[2, 4, 5], [2, 6, 0]]
    assert batch["labels"].tolist() == [[4, 5, 3], [6, 3, IGNORE_INDEX]]
    assert torch.equal(batch["inputs"][0, 1:], batch["labels"][0, :-1])


def test_generator_batch_has_condition_and_targets():
    examples = [TextExample(["a", "b"], "pos"), TextExample(["c"], "neg")]
    batch = collate(Encoder(vocab=WORDS, label_vocab=CLASSES, generate=True).encode_all(examples))
    assert set(batch) == {"targets", "target_lengths", "condition"}
    assert batch["targets"].tolist() == [[2, 4, 5, 3], [2, 6, 3, 0]]
    assert batch["condition"].tolist() == [1, 0] and batch["condition"].dtype == torch.long
    vectors = collate(Encoder(vocab=WORDS, generate=True).encode_all([TextExample(["a"], [0.5, 1.0])]))
    assert vectors["condition"].dtype == torch.float32 and vectors["condition"].shape == (1, 2)
    with pytest.raises(ValueError, match="g:1: generate=True needs a label"):
        Encoder(vocab=WORDS, generate=True)(TextExample(["a"], None, "g:1"))


def test_series_batch_is_float_b_t_d():
    examples = [SeriesExample(np.ones((3, 2)), "up"), SeriesExample(np.full((1, 2), 2.0), "down")]
    batch = collate(Encoder(label_vocab=Vocab.for_labels(["up", "down"], sort=False)).encode_all(examples))
    assert batch["inputs"].shape == (2, 3, 2) and batch["inputs"].dtype == torch.float32
    assert batch["inputs"][1].tolist() == [[2, 2], [0, 0], [0, 0]]
    assert batch["lengths"].tolist() == [3, 1] and batch["labels"].tolist() == [0, 1]


def test_unknown_label_at_evaluation_names_label_line_and_known_labels():
    encoder = Encoder(vocab=WORDS, label_vocab=CLASSES)
    with pytest.raises(ValueError, match=r"dev.tsv:9: unknown label 'neutral'; known labels \(2\): neg, pos"):
        encoder(TextExample(["a"], "neutral", "dev.tsv:9"))
    tagger = Encoder(vocab=WORDS, label_vocab=TAGS)
    with pytest.raises(ValueError, match=r"dev.conllu:4: unknown tag 'ADJ'; known tags \(2\): N, V"):
        tagger(TaggedExample(["a", "b"], ["N", "ADJ"], "dev.conllu:4"))


def test_unknown_words_map_to_unk():
    assert Encoder(vocab=WORDS)(TextExample(["a", "zebra"]))["inputs"] == [4, WORDS.unk_id]


def test_too_long_is_an_error_unless_truncation_is_chosen_and_reported():
    long = TextExample(["a"] * 5, "pos", "train.tsv:3")
    with pytest.raises(ValueError, match=r"train.tsv:3: input sequence has 5 tokens, more than max_length=4; "
                                         r".*data.truncate: true"):
        Encoder(vocab=WORDS, label_vocab=CLASSES, max_length=4)(long)
    encoder = Encoder(vocab=WORDS, label_vocab=CLASSES, max_length=4, truncate=True)
    with pytest.warns(UserWarning, match=r"truncated 1 of 2 sequence\(s\) .*first at train.tsv:3"):
        items = encoder.encode_all([long, TextExample(["b"], "neg", "train.tsv:4")])
    assert len(items[0]["inputs"]) == 4 and encoder.truncated_ == ["train.tsv:3"]
    with pytest.raises(ValueError, match=r"s.ts:2: series sequence has 3 time steps, more than max_length=2"):
        Encoder(max_length=2)(SeriesExample(np.zeros((3, 1)), None, "s.ts:2"))
    with pytest.raises(ValueError, match=r"p:1: target sequence has 2 tokens, more than max_target_length=1"):
        Encoder(vocab=WORDS, max_target_length=1)(PairExample(["a"], ["b", "c"], "p:1"))


def test_truncated_tags_stay_aligned():
    encoder = Encoder(vocab=WORDS, label_vocab=TAGS, max_length=1, truncate=True)
    with pytest.warns(UserWarning):
        item = encoder.encode_all([TaggedExample(["a", "b"], ["V", "N"])])[0]
    assert item == {"inputs": [4], "labels": [1]}


def test_encoder_and_collate_errors():
    with pytest.raises(ValueError, match="label 'pos' is a class name but the Encoder has no label_vocab"):
        Encoder(vocab=WORDS)(TextExample(["a"], "pos", "x:1"))
    with pytest.raises(ValueError, match="choose at most one of lm=True and generate=True"):
        Encoder(vocab=WORDS, lm=True, generate=True)
    with pytest.raises(ValueError, match="lm=True needs a vocab with <bos> and <eos>"):
        Encoder(vocab=Vocab(specials=("<pad>", "<unk>")).fit([["a"]]), lm=True)
    with pytest.raises(TypeError, match="cannot encode a dict"):
        Encoder(vocab=WORDS)({"tokens": ["a"]})
    with pytest.raises(ValueError, match="max_length must be None or an int >= 1; got 0"):
        Encoder(max_length=0)
    with pytest.raises(ValueError, match="same keys"):
        collate([{"inputs": [1], "labels": 0}, {"inputs": [2]}])
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        collate([{"inputs": []}])


# ------------------------------------------------------------------------------ bucketing

LENGTHS = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 3, 3, 1]


def test_buckets_cover_every_index_once_and_group_similar_lengths():
    sampler = BucketBatchSampler(LENGTHS, batch_size=3, bucket_factor=100, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert len(batches) == len(sampler) == math.ceil(len(LENGTHS) / 3)
    # one chunk holds everything, so batches are slices of the length-sorted order
    spans = sorted((min(LENGTHS[i] for i in b), max(LENGTHS[i] for i in b)) for b in batches)
    assert all(hi_prev <= lo for (_, hi_prev), (lo, _) in zip(spans, spans[1:]))


def test_deterministic_under_seed_and_epoch():
    make = lambda seed: BucketBatchSampler(LENGTHS, batch_size=2, bucket_factor=2, seed=seed)  # noqa: E731
    assert list(make(3)) == list(make(3))
    assert list(make(3)) != list(make(4))
    sampler = make(3)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_no_shuffle_keeps_chunk_order():
    sampler = BucketBatchSampler([1, 2, 3, 4], batch_size=2, bucket_factor=1, shuffle=False)
    assert list(sampler) == [[1, 0], [3, 2]]  # each chunk of 2 sorted longest first


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_split_global_batches(drop_last):
    """W ranks of batch b take, step by step, every W-th item of the batches one process of
    batch W * b gets; a global batch too short to give every rank an item is skipped by all."""
    world = 3
    samplers = [BucketBatchSampler(LENGTHS, batch_size=2, bucket_factor=2, seed=5, drop_last=drop_last,
                                   rank=r, world_size=world) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    assert all(len(b) == len(s) for b, s in zip(per_rank, samplers))
    assert len({len(b) for b in per_rank}) == 1
    full = list(BucketBatchSampler(LENGTHS, batch_size=2 * world, bucket_factor=2, seed=5, drop_last=drop_last))
    kept = [b for b in full if len(b) >= (2 * world if drop_last else world)]
    assert len(per_rank[0]) == len(kept)
    for step, batch in enumerate(kept):
        for r in range(world):
            assert per_rank[r][step] == batch[r::world]
    if not drop_last:
        assert sum(map(len, kept)) > len(LENGTHS) - world  # at most W - 1 items left out per chunk


def test_sampler_len_matches_iteration_for_many_worlds():
    for n in range(1, 30):
        for world in (2, 3):
            for drop_last in (False, True):
                s = BucketBatchSampler([1 + i % 5 for i in range(n)], batch_size=2, bucket_factor=2, seed=1,
                                       drop_last=drop_last, rank=world - 1, world_size=world)
                assert len(list(s)) == len(s), (n, world, drop_last)


def test_sampler_len_matches_iteration_for_many_sizes():
    for n in range(1, 40):
        for drop_last in (False, True):
            s = BucketBatchSampler([1] * n, batch_size=4, bucket_factor=3, seed=0, drop_last=drop_last)
            assert len(list(s)) == len(s)


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, world_size=2\); got 2"):
        BucketBatchSampler([1], batch_size=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got 0"):
        BucketBatchSampler([1], batch_size=0)
    with pytest.raises(ValueError, match="lengths is empty"):
        BucketBatchSampler([], batch_size=1)


def test_works_with_dataloader():
    examples = [TextExample(["a"] * n, "pos" if n % 2 else "neg") for n in LENGTHS]
    items = Encoder(vocab=WORDS, label_vocab=CLASSES).encode_all(examples)
    sampler = BucketBatchSampler([len(x["inputs"]) for x in items], batch_size=4, seed=0)
    batches = list(DataLoader(items, batch_sampler=sampler, collate_fn=collate))
    assert sum(b["inputs"].shape[0] for b in batches) == len(LENGTHS)
    for b in batches:
        assert b["inputs"].shape[1] == int(b["lengths"].max())
        assert ((b["inputs"] != 0).sum(1) == b["lengths"]).all()


def test_batches_iterable_matches_sampler_and_reshuffles_per_epoch():
    items = Encoder(vocab=WORDS).encode_all([TextExample(["a"] * n) for n in LENGTHS])
    batches = Batches(items, batch_size=4, bucket_factor=1, seed=2)
    sampler = BucketBatchSampler(LENGTHS, batch_size=4, bucket_factor=1, seed=2)
    first = [b["lengths"].tolist() for b in batches]
    assert first == [[LENGTHS[i] for i in idx] for idx in sampler] and len(batches) == len(sampler)
    assert first == [b["lengths"].tolist() for b in batches]  # same epoch, same order
    batches.set_epoch(1)
    assert first != [b["lengths"].tolist() for b in batches]


# ------------------------------------------------------------------------------ LM streams

def test_lm_stream_windows_continue_rows_and_shift_labels():
    ids = torch.arange(1, 27)  # N = 26, B = 4: 25 pairs -> rows of 7, 6, 6, 6
    stream = LMStream(ids, batch_size=4, bptt=4)
    batches = list(stream)
    assert len(batches) == len(stream) == 2 and stream.stream_length == 7
    first, second = batches
    assert first["inputs"].shape == (4, 4) and second["inputs"].shape == (4, 3)
    assert first["inputs"][1].tolist() == [8, 9, 10, 11] and second["inputs"][1].tolist() == [12, 13, 0]
    assert second["labels"][0].tolist() == [6, 7, 8] and second["labels"][1].tolist() == [13, 14, -100]
    assert torch.equal(first["labels"][:, :-1], first["inputs"][:, 1:])  # shifted by one
    assert first["labels"][:, -1].tolist() == second["inputs"][:, 0].tolist()  # row continues
    assert first["lengths"].tolist() == [4] * 4


def test_lm_stream_predicts_every_next_token_exactly_once():
    for N, B, bptt in [(25, 4, 4), (10, 3, 5), (100, 7, 9), (9, 8, 1), (10, 8, 3)]:
        ids = torch.randint(4, 50, (N,), generator=torch.Generator().manual_seed(N))
        pairs = []
        for batch in LMStream(ids, batch_size=B, bptt=bptt):
            keep = batch["labels"] != IGNORE_INDEX
            pairs += list(zip(batch["inputs"][keep].tolist(), batch["labels"][keep].tolist()))
        assert len(pairs) == N - 1
        assert (batch["labels"] == IGNORE_INDEX).sum() < B  # at most one padding step per row
        # as a multiset, the pairs are exactly the consecutive pairs of the stream
        assert sorted(pairs) == sorted(zip(ids[:-1].tolist(), ids[1:].tolist()))


def test_lm_stream_errors():
    with pytest.raises(ValueError, match=r"the token stream has 3 ids; B = batch_size = 4 streams need at least"):
        LMStream([1, 2, 3], batch_size=4, bptt=2)
    with pytest.raises(ValueError, match="bptt must be an int >= 1; got 0"):
        LMStream([1, 2, 3], batch_size=1, bptt=0)
