import itertools

import pytest
import torch

from rnnkit.models import beam_search, greedy, sample

V, EOS = 5, 3


class ToyDecoder:
    """A fixed random decoder: the next-token distribution depends on the previous token and
    on a running state vector, so beam bookkeeping (reordering state) matters."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V, 4, V, generator=g) * 0.7
        self.mix = torch.randn(V, 4, generator=g)

    def step(self, token, state):
        h = torch.tanh(state + self.mix[token])  # (N, 4)
        logits = (h[:, :, None] * self.table[token]).sum(1)  # (N, V)
        return logits.log_softmax(-1), h

    def start(self, B, seed=1):
        h = torch.randn(B, 4, generator=torch.Generator().manual_seed(seed))
        return self.step(torch.zeros(B, dtype=torch.long), h)


def _score(dec, state0, lp0, seq):
    """Total log-probability of ``seq`` (ending with EOS or cut at max length)."""
    lp, state, total = lp0, state0, 0.0
    for i, tok in enumerate(seq):
        total += float(lp[0, tok])
        if i + 1 < len(seq):
            lp, state = dec.step(torch.tensor([tok]), state)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_equals_greedy(seed):
    dec = ToyDecoder(seed)
    lp, state = dec.start(6, seed)
    g = greedy(dec.step, state, lp, max_length=7, eos_id=EOS)
    b = beam_search(dec.step, state, lp, beam_size=1, max_length=7, eos_id=EOS)
    assert b == g
    assert any(len(row) < 7 for row in g)  # some rows stop at EOS, so that path is exercised


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search(alpha):
    """With a beam as wide as the number of hypotheses, beam search is exhaustive: it must
    return the best length-normalised sequence found by enumeration."""
    dec = ToyDecoder(0)
    L, B = 3, 6
    lp, state = dec.start(B, 2)
    found = beam_search(dec.step, state, lp, beam_size=V ** L, max_length=L, eos_id=EOS, length_penalty=alpha)
    # The search must matter: greedy misses the best sequence for some rows.
    assert found != greedy(dec.step, state, lp, max_length=L, eos_id=EOS)
    for b in range(B):
        best, best_seq = float("-inf"), None
        for n in range(1, L + 1):
            for seq in itertools.product(range(V), repeat=n):
                if EOS in seq[:-1] or (n < L and seq[-1] != EOS):
                    continue  # EOS ends a hypothesis; shorter ones must end with it
                s = _score(dec, state[b:b + 1], lp[b:b + 1], seq) / n ** alpha
                if s > best:
                    best, best_seq = s, list(seq)
        want = best_seq[:-1] if best_seq[-1] == EOS else best_seq
        assert found[b] == want


def test_sampling_top_k_one_is_greedy_and_seeded_sampling_repeats():
    dec = ToyDecoder(4)
    lp, state = dec.start(5)
    g = greedy(dec.step, state, lp, max_length=6, eos_id=EOS)
    assert sample(dec.step, state, lp, max_length=6, eos_id=EOS, top_k=1) == g
    runs = [sample(dec.step, state, lp, max_length=6, eos_id=EOS, temperature=2.0,
                   generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0] != g  # hot sampling leaves the argmax path somewhere


def test_low_temperature_approaches_greedy_and_top_k_restricts():
    dec = ToyDecoder(6)
    lp, state = dec.start(8)
    g = greedy(dec.step, state, lp, max_length=5)
    cold = sample(dec.step, state, lp, max_length=5, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert cold == g
    top2 = [set(row.topk(2).indices.tolist()) for row in lp]

    def outside_top2(top_k):
        gen = torch.Generator().manual_seed(0)
        draws = [sample(dec.step, state, lp, max_length=1, top_k=top_k, temperature=5.0, generator=gen)
                 for _ in range(20)]
        return sum(row[0] not in top2[b] for d in draws for b, row in enumerate(d))

    assert outside_top2(2) == 0
    assert outside_top2(None) > 0  # without top-k, a hot sampler does leave the top two


def test_bad_decoding_arguments():
    dec = ToyDecoder()
    lp, state = dec.start(2)
    with pytest.raises(ValueError, match="temperature must be a float > 0"):
        sample(dec.step, state, lp, max_length=3, temperature=0.0)
    with pytest.raises(ValueError, match="beam_size must be an int >= 1"):
        beam_search(dec.step, state, lp, beam_size=0, max_length=3)
    with pytest.raises(ValueError, match="max_length must be an int >= 1"):
        greedy(dec.step, state, lp, max_length=0)
