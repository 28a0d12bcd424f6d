import math

import pytest
import torch

from heads_util import overfit, pad_more, rebuild
from rnnkit.models import LanguageModel

V = 10


def _lm(**kw):
    torch.manual_seed(0)
    enc = kw.pop("encoder", {"hidden_sizes": [24], "cell": "lstm"})
    return LanguageModel(vocab_size=V, embedding_dim=12, encoder=enc, **kw)


def _batch(seqs):
    """LM batch from token lists: labels are inputs shifted by one, -100 past the end."""
    T = max(len(s) for s in seqs) - 1
    inputs = torch.zeros(len(seqs), T, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100)
    for b, s in enumerate(seqs):
        inputs[b, :len(s) - 1] = torch.tensor(s[:-1])
        labels[b, :len(s) - 1] = torch.tensor(s[1:])
    return {"inputs": inputs, "labels": labels, "lengths": torch.tensor([len(s) - 1 for s in seqs])}


SEQS = [[4, 5, 6, 7, 8, 9, 4], [7, 6, 5, 4, 9], [9, 8, 7]]


def test_rejects_bidirectional_encoder_with_an_explanation():
    with pytest.raises(ValueError, match="backward direction reads the very tokens it must predict"):
        LanguageModel(vocab_size=V, encoder={"bidirectional": True})
    with pytest.raises(ValueError, match="travellerererer"):
        LanguageModel(vocab_size=V, encoder={"hidden_sizes": [8, 8], "bidirectional": [False, True]})


@pytest.mark.parametrize("tie_weights", [False, True])
def test_overfits_and_generates_the_memorised_continuation(tie_weights):
    model = _lm(tie_weights=tie_weights)
    batch = _batch(SEQS)
    assert overfit(model, batch, steps=150, lr=0.03) < 0.02
    prompts = {"inputs": torch.tensor([[4, 5, 0], [7, 6, 5]]), "lengths": torch.tensor([2, 3])}
    assert model.predict(prompts, max_new_tokens=2) == [[6, 7], [4, 9]]


def test_tied_weights_share_one_matrix():
    model = _lm(tie_weights=True)  # H = 24 != E = 12: a projection comes first
    names = dict(model.named_parameters())
    assert "output.weight" not in names and "proj.weight" in names
    batch = _batch(SEQS)
    model.loss(batch).backward()
    assert model.input.embedding.weight.grad[9].abs().sum() > 0  # the output layer trains it too


def test_padding_never_changes_output():
    model = _lm().eval()
    batch = _batch(SEQS)
    longer = dict(batch, inputs=pad_more(batch["inputs"], 3, high=V),
                  labels=torch.cat([batch["labels"], torch.randint(1, V, (3, 3))], 1))
    with torch.no_grad():
        ref, _ = model(batch)
        out, _ = model(longer)
        assert torch.allclose(out[:, :ref.shape[1]][batch["labels"] != -100], ref[batch["labels"] != -100], atol=1e-5)
        assert torch.allclose(model.loss(longer), model.loss(batch))
    together = model.predict(longer, max_new_tokens=3)
    assert together == model.predict(batch, max_new_tokens=3)
    for b, n in enumerate(batch["lengths"].tolist()):  # each prompt alone, unpadded
        alone = {"inputs": batch["inputs"][b:b + 1, :n], "lengths": torch.tensor([n])}
        assert model.predict(alone, max_new_tokens=3) == together[b:b + 1]


def test_greedy_generation_matches_the_full_forward_pass():
    """Each generated token is the argmax of a full pass over prompt + generated so far, so
    the stepwise state equals the whole-sequence state."""
    model = _lm(encoder={"hidden_sizes": [8, 8], "residual": True, "layer_norm": True}).eval()
    prompt = [3, 5, 2]
    new = model.predict({"inputs": torch.tensor([prompt]), "lengths": torch.tensor([3])}, max_new_tokens=5)[0]
    seq = prompt + new
    with torch.no_grad():
        logits, _ = model({"inputs": torch.tensor([seq]), "lengths": torch.tensor([len(seq)])})
    logits[..., 0] = float("-inf")  # generation never emits padding
    assert logits[0, len(prompt) - 1:-1].argmax(-1).tolist() == new


def test_truncated_bptt_carries_the_detached_state():
    model = _lm(carry_state=True).eval()
    stream = torch.randint(1, V, (2, 9))
    full = {"inputs": stream[:, :8], "labels": stream[:, 1:], "lengths": torch.tensor([8, 8])}
    first = {k: (v[:, :4] if v.dim() == 2 else torch.tensor([4, 4])) for k, v in full.items()}
    second = {k: (v[:, 4:] if v.dim() == 2 else torch.tensor([4, 4])) for k, v in full.items()}
    with torch.no_grad():
        logits, _ = model(full)
    want = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, V), full["labels"][:, 4:].reshape(-1))
    model.loss(first)
    assert all(not t.requires_grad for t in model.state_[0])  # detached between batches
    assert torch.allclose(model.loss(second), want, atol=1e-5)
    model.reset_state()
    assert not torch.allclose(model.loss(second), want, atol=1e-3)  # from zeros it differs
    stateless = _lm(carry_state=False).eval()
    model.reset_state()
    assert torch.allclose(stateless.loss(second), model.loss(second))
    model.loss(first)
    model.train()  # a mode switch starts the stream afresh, as reset_state does
    assert torch.allclose(model.loss(second), stateless.loss(second))


def test_perplexity_is_exp_of_mean_token_nll():
    model = _lm().eval()
    a, b = _batch(SEQS), _batch([[4, 4, 4], [5, 6, 7, 8]])
    counts = [int((x["labels"] != -100).sum()) for x in (a, b)]
    with torch.no_grad():
        mean = (float(model.loss(a)) * counts[0] + float(model.loss(b)) * counts[1]) / sum(counts)
    assert math.isclose(model.perplexity([a, b]), math.exp(mean), rel_tol=1e-5)
    assert model.perplexity([a]) < V * 2  # an untrained model is near uniform, not wildly off


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = _lm().eval()
    prompts = {"inputs": torch.tensor([[4, 5], [6, 7]]), "lengths": torch.tensor([2, 2])}
    g = model.generate(prompts, max_new_tokens=6)
    assert model.generate(prompts, max_new_tokens=6, strategy="sample", top_k=1, seed=3) == g
    s1 = model.generate(prompts, max_new_tokens=6, strategy="sample", temperature=3.0, seed=3)
    assert s1 == model.generate(prompts, max_new_tokens=6, strategy="sample", temperature=3.0, seed=3)
    assert s1 != g


def test_eos_stops_generation_and_config_rebuilds():
    model = _lm(eos_id=3, tie_weights=True).eval()
    batch = _batch(SEQS)
    with torch.no_grad():
        assert torch.equal(rebuild(model)(batch)[0], model(batch)[0])
    outs = model.predict(batch, max_new_tokens=30, strategy="sample", temperature=2.0, seed=0)
    assert all(3 not in row for row in outs) and any(len(row) < 30 for row in outs)


def test_bad_input_raises_clear_errors():
    model = _lm(max_length=5)
    batch = _batch(SEQS)
    with pytest.raises(ValueError, match="length 6, longer than max_length = 5"):
        model.loss(batch)
    model = _lm()
    bad = batch["labels"].clone()
    bad[0, 0] = V
    with pytest.raises(ValueError, match=r"batch\['labels'\] must hold token ids in \[0, 9\]"):
        model.loss(dict(batch, labels=bad))
    with pytest.raises(ValueError, match="batch is empty"):
        model.loss({"inputs": torch.zeros(0, 2, dtype=torch.long), "lengths": torch.zeros(0, dtype=torch.long),
                    "labels": torch.zeros(0, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match="strategy must be one of greedy, sample"):
        model.generate(batch, strategy="beam")


# ----------------------------------------------------------------- adaptive softmax

def test_adaptive_softmax_loss_is_the_nll_of_its_own_full_distribution():
    model = _lm(adaptive_cutoffs=[4, 7], dropout=0.0).eval()
    batch = _batch(SEQS)
    logits, _ = model(batch)
    assert logits.shape == (3, 6, V)
    # forward gives log-probabilities: every row is a distribution over all V ids
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(3, 6))
    keep = batch["labels"] != -100
    by_hand = -logits[keep].gather(1, batch["labels"][keep][:, None]).mean()
    torch.testing.assert_close(model.loss(batch), by_hand)  # the fast path: head + target clusters only
    # and it is not the full softmax of some other layer: the tail ids go through their cluster
    assert model.output is None and len(model.adaptive.tail) == 2
    assert math.isclose(model.perplexity([batch]), math.exp(float(by_hand.detach())), rel_tol=1e-5)


def test_adaptive_softmax_trains_generates_and_rebuilds():
    model = _lm(adaptive_cutoffs=[6])
    batch = _batch(SEQS)
    assert overfit(model, batch, steps=200, lr=0.03) < 0.05
    prompts = {"inputs": torch.tensor([[4, 5, 0], [7, 6, 5]]), "lengths": torch.tensor([2, 3])}
    assert model.predict(prompts, max_new_tokens=2) == [[6, 7], [4, 9]]
    twin = rebuild(model)
    assert twin.config["adaptive_cutoffs"] == [6]
    torch.testing.assert_close(twin(batch)[0], model(batch)[0])


def test_adaptive_softmax_options_are_checked():
    with pytest.raises(ValueError, match="with tie_weights .* adaptive_div must be 1"):
        _lm(adaptive_cutoffs=[5], tie_weights=True, adaptive_div=2)
    for bad in ([7, 4], [0, 5], [5, 10], [5, 5], "5", []):
        with pytest.raises(ValueError, match="adaptive_cutoffs must"):
            _lm(adaptive_cutoffs=bad)
    with pytest.raises(ValueError, match="adaptive_div must be a number >= 1"):
        _lm(adaptive_cutoffs=[5], adaptive_div=0.5)
    with pytest.raises(ValueError, match=r"projection of 24 // 8\^2 = 0 dimensions"):
        _lm(adaptive_cutoffs=[3, 6], adaptive_div=8)
    assert "adaptive_cutoffs" not in _lm().config  # a plain model's config is as before


# ----------------------------------------------------------------- tied adaptive softmax

def test_tied_adaptive_softmax_is_a_distribution_its_loss_the_nll_and_the_words_the_embedding():
    from rnnkit.models import TiedAdaptiveSoftmax
    model = _lm(adaptive_cutoffs=[4, 7], tie_weights=True, dropout=0.0,
                encoder={"hidden_sizes": [12], "cell": "lstm"}).eval()
    assert isinstance(model.adaptive, TiedAdaptiveSoftmax) and model.config["adaptive_div"] == 1.0
    batch = _batch(SEQS)
    logp, _ = model(batch)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 6))
    keep = batch["labels"] != -100
    by_hand = -logp[keep].gather(1, batch["labels"][keep][:, None]).mean()
    torch.testing.assert_close(model.loss(batch), by_hand)  # head + the targets' clusters only
    # the reference math: with identity projections, every word is scored h . e_w + b_w and its
    # probability is p(cluster) * softmax within the cluster
    torch.manual_seed(1)
    with torch.no_grad():
        model.adaptive.bias.normal_()
        for proj in model.adaptive.tail:
            proj.weight.add_(0.1 * torch.randn_like(proj.weight))
    h = torch.randn(5, 12)
    E = model.input.embedding.weight
    head = torch.cat([h @ E[:4].T + model.adaptive.bias[:4], model.adaptive.cluster(h)], -1).log_softmax(-1)
    t1 = (model.adaptive.tail[0](h) @ E[4:7].T + model.adaptive.bias[4:7]).log_softmax(-1)
    t2 = (model.adaptive.tail[1](h) @ E[7:].T + model.adaptive.bias[7:]).log_softmax(-1)
    ref = torch.cat([head[:, :4], head[:, 4:5] + t1, head[:, 5:6] + t2], -1)
    torch.testing.assert_close(model.adaptive.log_prob(h, E), ref)
    target = torch.tensor([1, 5, 9, 3, 7])
    torch.testing.assert_close(model.adaptive.nll(h, target, E), -ref.gather(1, target[:, None]).squeeze(1))
    # tied: the embedding gets the output's gradient, and no V x E matrix is stored twice
    model.train()
    model.zero_grad()
    model.loss(batch).backward()
    assert model.input.embedding.weight.grad[7:].abs().sum() > 0  # rows only the last cluster scores
    assert not any(p.shape == E.shape for n, p in model.named_parameters() if not n.startswith("input."))


def test_tied_adaptive_softmax_trains_generates_and_rebuilds():
    model = _lm(adaptive_cutoffs=[6], tie_weights=True)  # H 24 != E 12: the tied projection comes first
    batch = _batch(SEQS)
    assert overfit(model, batch, steps=200, lr=0.03) < 0.05
    prompts = {"inputs": torch.tensor([[4, 5, 0], [7, 6, 5]]), "lengths": torch.tensor([2, 3])}
    assert model.predict(prompts, max_new_tokens=2) == [[6, 7], [4, 9]]
    twin = rebuild(model)
    assert twin.tied_adaptive and twin.config["adaptive_cutoffs"] == [6]
    torch.testing.assert_close(twin(batch)[0], model(batch)[0])


@pytest.mark.parametrize("adaptive", [None, [20]])
def test_a_tied_model_starts_from_small_word_vectors_not_a_saturated_softmax(adaptive):
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=50, embedding_dim=64, tie_weights=True, adaptive_cutoffs=adaptive,
                          encoder={"cell": "lstm", "hidden_sizes": [64]})
    weight = model.input.embedding.weight.detach()
    assert float(weight.abs().max()) <= 0.1 and float(weight[0].abs().max()) == 0.0  # padding stays zero
    ids = torch.randint(1, 50, (8, 12))
    batch = {"inputs": ids, "lengths": torch.full((8,), 12), "labels": torch.roll(ids, -1, 1)}
    assert abs(model.loss(batch).item() - math.log(50)) < 0.1  # every word about equally likely
