import itertools

import pytest
import torch

from rnnkit.models import CRF, allowed_transitions

TAGS = ["O", "B-PER", "I-PER"]


def _crf(scheme=None, K=3, seed=0):
    torch.manual_seed(seed)
    crf = CRF(K, tags=TAGS if scheme else None, scheme=scheme)
    with torch.no_grad():  # away from the zero init, so every term matters
        for p in crf.parameters():
            p.normal_()
    return crf


def _brute(crf, emissions, L):
    """Score of every tag sequence of length L for one sentence, by enumeration."""
    trans, start, end = crf._potentials()
    paths, scores = [], []
    for y in itertools.product(range(crf.num_tags), repeat=L):
        s = start[y[0]] + end[y[-1]] + sum(emissions[t, y[t]] for t in range(L))
        s = s + sum(trans[y[t - 1], y[t]] for t in range(1, L))
        paths.append(list(y))
        scores.append(s)
    return paths, torch.stack(scores)


@pytest.mark.parametrize("scheme", [None, "bio"])
def test_log_partition_and_viterbi_equal_brute_force(scheme):
    crf = _crf(scheme)
    emissions = torch.randn(8, 4, 3, dtype=torch.float64) * 2
    crf = crf.double()
    lengths = torch.tensor([4, 2, 1, 3, 1, 2, 3, 4])
    log_z = crf.log_partition(emissions, lengths)
    best = crf.decode(emissions, lengths)
    for b, L in enumerate(lengths.tolist()):
        paths, scores = _brute(crf, emissions[b], L)
        assert torch.allclose(log_z[b], torch.logsumexp(scores, 0), atol=1e-9)
        assert best[b] == paths[int(scores.argmax())]


def test_score_of_a_path_and_nll_match_brute_force():
    crf = _crf().double()
    emissions = torch.randn(2, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 2])
    tags = torch.tensor([[2, 0, 1], [1, 2, 0]])
    nll = crf.nll(emissions, tags, lengths)
    for b, L in enumerate(lengths.tolist()):
        paths, scores = _brute(crf, emissions[b], L)
        gold = scores[paths.index(tags[b, :L].tolist())]
        assert torch.allclose(nll[b], torch.logsumexp(scores, 0) - gold, atol=1e-9)
    assert bool((nll > 0).all())


def test_padding_does_not_change_crf():
    crf = _crf()
    emissions = torch.randn(2, 5, 3)
    lengths = torch.tensor([5, 3])
    padded = torch.cat([emissions, torch.randn(2, 2, 3) * 10], dim=1)
    assert torch.allclose(crf.log_partition(emissions, lengths), crf.log_partition(padded, lengths))
    assert crf.decode(emissions, lengths) == crf.decode(padded, lengths)


def test_bio_constraints():
    trans, start, end = allowed_transitions(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "bio")
    assert not trans[0, 2] and not trans[1, 4] and not trans[2, 4]   # O->I, B-PER->I-LOC
    assert trans[1, 2] and trans[2, 2] and trans[2, 3] and trans[0, 1]
    assert start.tolist() == [True, True, False, True, False] and bool(end.all())


def test_iobes_constraints():
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    trans, start, end = allowed_transitions(tags, "iobes")
    allowed = {(tags[i], tags[j]) for i, j in trans.nonzero().tolist()}
    assert ("B-X", "E-X") in allowed and ("I-X", "I-X") in allowed and ("E-X", "S-X") in allowed
    assert ("B-X", "O") not in allowed and ("O", "I-X") not in allowed and ("S-X", "E-X") not in allowed
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]


def test_constrained_viterbi_never_takes_a_forbidden_step():
    crf = _crf("bio")
    emissions = torch.randn(16, 6, 3)
    emissions[..., 2] += 3.0  # push hard towards I-PER, which may never follow O or start
    for path in crf.decode(emissions, torch.full((16,), 6)):
        assert path[0] != 2
        assert all(not (a == 0 and b == 2) for a, b in zip(path, path[1:]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="follow the BIO scheme.*'X-PER'"):
        allowed_transitions(["O", "X-PER"], "bio")
    with pytest.raises(ValueError, match="scheme='bio' needs tags"):
        CRF(3, scheme="bio")
    with pytest.raises(ValueError, match="emissions must have shape"):
        CRF(3).log_partition(torch.randn(2, 4, 5), torch.tensor([4, 4]))


def test_iobes_constrained_viterbi_returns_only_valid_paths():
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    trans, start, end = allowed_transitions(tags, "iobes")
    torch.manual_seed(1)
    crf = CRF(5, tags=tags, scheme="iobes")
    emissions = torch.randn(32, 5, 5) * 3
    lengths = torch.randint(1, 6, (32,))
    unconstrained = CRF(5)
    unconstrained.load_state_dict(crf.state_dict())
    bad = 0
    for path, free in zip(crf.decode(emissions, lengths), unconstrained.decode(emissions, lengths)):
        assert start[path[0]] and end[path[-1]] and all(trans[a, b] for a, b in zip(path, path[1:]))
        bad += not (start[free[0]] and end[free[-1]] and all(trans[a, b] for a, b in zip(free, free[1:])))
    assert bad > 0  # the same scores without constraints do produce invalid paths
