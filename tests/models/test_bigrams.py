"""Hashed bigram features (``BigramFeatures``) and the heads that join them to the embeddings."""

import math

import pytest
import torch

from heads_util import overfit, pad_more, rebuild
from rnnkit.models import SequenceClassifier, SequenceTagger
from rnnkit.models._common import BigramFeatures


def _reference_row(a: int, b: int, vocab_size: int, buckets: int) -> int:
    """The bucket of bigram (a, b), in Python's exact integers."""
    return ((a * vocab_size + b) % 2147483647) * 2654435761 % 4294967291 % buckets


def test_each_token_gets_the_rows_of_its_left_and_right_bigram_with_padding_as_the_boundary():
    torch.manual_seed(0)
    V, K = 60_000, 1009  # a word-sized vocabulary: the hash must not overflow int64
    feats = BigramFeatures(V, K, 3)
    ids = torch.tensor([[59_999, 7, 59_998, 7, 0, 0], [5, 7, 59_999, 7, 5, 7]])
    lengths = torch.tensor([4, 6])
    out = feats(ids, lengths)
    assert out.shape == (2, 6, 6)
    E = feats.embedding.weight
    for b in range(2):
        seq = [0] + ids[b, :lengths[b]].tolist() + [0]
        for t in range(int(lengths[b])):
            left = _reference_row(seq[t], seq[t + 1], V, K)
            right = _reference_row(seq[t + 1], seq[t + 2], V, K)
            torch.testing.assert_close(out[b, t], torch.cat([E[left], E[right]]))
    # the same bigram in two places is one row; its reverse is another
    torch.testing.assert_close(out[1, 0, 3:], out[1, 4, 3:])  # (5, 7): right of both 5s
    torch.testing.assert_close(out[1, 0, 3:], out[1, 1, :3])  # and left of the 7 after the first
    assert _reference_row(5, 7, V, K) != _reference_row(7, 5, V, K)


def test_the_hash_spreads_bigrams_over_a_power_of_two_buckets_as_a_random_map_would():
    # n distinct bigrams thrown at random into m rows leave a fraction e^(-n/m) alone in theirs;
    # so must the hash, for random pairs and for the regular ones of neighbouring ids
    torch.manual_seed(0)
    m = 1 << 16
    feats = BigramFeatures(5000, m, 1)
    a = torch.arange(1, 5000).repeat_interleave(4)
    for pairs in (torch.unique(torch.randint(1, 5000, (20_000, 2)), dim=0),
                  torch.stack([a, (a + torch.arange(4).repeat(4999)) % 5000], 1)):
        rows = feats.bucket(pairs[:, 0], pairs[:, 1])
        alone = (torch.bincount(rows, minlength=m)[rows] == 1).float().mean().item()
        assert alone > math.exp(-len(pairs) / m) - 0.02


def test_what_lies_past_a_length_does_not_reach_the_last_token():
    torch.manual_seed(0)
    feats = BigramFeatures(10, 31, 2)
    ids, lengths = torch.tensor([[3, 4, 5]]), torch.tensor([3])
    torch.testing.assert_close(feats(pad_more(ids, 3, high=9), lengths)[:, :3], feats(ids, lengths))


def test_a_forward_only_tagger_sees_the_next_token_through_its_right_bigram():
    # the tag of each token is the parity of the token after it (2 at the end): a left-to-right
    # RNN must emit the tag before it reads that token, so on new sentences it can only guess;
    # the right bigram carries it
    torch.manual_seed(0)

    def sentences(n):
        ids = torch.randint(1, 9, (n, 7))
        nxt = torch.cat([ids[:, 1:], torch.zeros(n, 1, dtype=torch.long)], 1)
        return {"inputs": ids, "lengths": torch.full((n,), 7), "labels": (nxt % 2) + (nxt == 0) * 2}

    train, new = sentences(96), sentences(96)
    enc = {"cell": "gru", "hidden_sizes": [16]}

    def accuracy(**kw):
        torch.manual_seed(0)
        model = SequenceTagger(vocab_size=9, num_tags=3, encoder=enc, embedding_dim=8, **kw)
        overfit(model, train, steps=200, lr=0.03)
        return (torch.tensor(model.predict(new)) == new["labels"]).float().mean().item()

    assert accuracy(bigram_buckets=1009, bigram_embedding_dim=8) > 0.97
    assert accuracy() < 0.75  # 6 of 7 tags a coin toss, the last one known


def test_heads_rebuild_with_bigrams_and_check_their_options():
    torch.manual_seed(0)
    batch = {"inputs": torch.tensor([[3, 4, 5, 6], [6, 5, 0, 0]]), "lengths": torch.tensor([4, 2]),
             "labels": torch.tensor([1, 0])}
    model = SequenceClassifier(num_classes=2, vocab_size=8, bigram_buckets=17, bigram_embedding_dim=4,
                               encoder={"cell": "gru", "hidden_sizes": [6], "bidirectional": True}).eval()
    assert model.config["bigram_buckets"] == 17 and model.bigrams.embedding.weight.shape == (17, 4)
    torch.testing.assert_close(rebuild(model)(batch), model(batch))
    assert "bigram_buckets" not in SequenceClassifier(num_classes=2, vocab_size=8).config
    with pytest.raises(ValueError, match="bigram_buckets"):
        SequenceTagger(vocab_size=8, num_tags=2, bigram_buckets=1)
    with pytest.raises(ValueError, match="need token-id inputs"):
        SequenceTagger(input_size=3, num_tags=2, bigram_buckets=17)
    with pytest.raises(ValueError, match="need token-id inputs"):
        SequenceClassifier(input_size=3, num_classes=2, bigram_buckets=17)
