import math
import random

import pytest
import torch
import torch.nn.functional as F

from heads_util import overfit, rebuild
from rnnkit.layers import Stack
from rnnkit.models import BiLanguageModel, ContextualFeatures, SequenceClassifier, SequenceTagger
from rnnkit.models._common import layer_outputs
from rnnkit.recurrence import reverse_padded

V, BOS, EOS = 12, 2, 3


def _bilm(**kw):
    torch.manual_seed(0)
    kw.setdefault("encoder", {"hidden_sizes": [10, 10], "cell": "lstm"})
    return BiLanguageModel(vocab_size=V, embedding_dim=8, **kw)


def _batch(seqs):
    T = max(map(len, seqs))
    inputs = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        inputs[b, :len(s)] = torch.tensor(s)
    return {"inputs": inputs, "lengths": torch.tensor([len(s) for s in seqs])}


SEQS = [[4, 5, 6, 7, 8, 9], [7, 6, 5], [9, 8, 7, 11, 10], [4]]

ENCODERS = [{"hidden_sizes": [10, 10], "cell": "lstm"},
            {"hidden_sizes": [10, 10], "cell": "gru", "residual": True, "layer_norm": True}]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_no_direction_ever_sees_the_token_it_predicts(encoder):
    """For random t in a padded batch, changing token t never changes either direction's
    prediction of token t (forward: from the state at t-1; backward: from the state at t+1),
    while it does change the forward prediction of t+1 and the backward prediction of t-1 (so
    the comparison can see a dependence where there is one)."""
    model = _bilm(encoder=encoder).eval()
    rng = random.Random(0)
    base = _batch(SEQS)
    f0, b0 = model(base)
    for _ in range(8):
        i = rng.randrange(len(SEQS))
        n = len(SEQS[i])
        t = rng.randrange(n)
        changed = {k: v.clone() for k, v in base.items()}
        changed["inputs"][i, t] = 4 + (int(base["inputs"][i, t]) - 4 + rng.randrange(1, V - 4)) % (V - 4)
        f1, b1 = model(changed)
        torch.testing.assert_close(f1[i, t], f0[i, t], rtol=0, atol=1e-6)
        torch.testing.assert_close(b1[i, t], b0[i, t], rtol=0, atol=1e-6)
        if t + 1 < n:
            assert (f1[i, t + 1] - f0[i, t + 1]).abs().max() > 1e-4
        if t > 0:
            assert (b1[i, t - 1] - b0[i, t - 1]).abs().max() > 1e-4
        others = [j for j in range(len(SEQS)) if j != i]
        torch.testing.assert_close(f1[others], f0[others], rtol=0, atol=1e-6)


def test_backward_direction_is_a_forward_lm_on_the_reversed_sentence_and_ignores_padding():
    model = _bilm().eval()
    batch = _batch(SEQS)
    c = model.contextual(batch)
    for i, s in enumerate(SEQS):
        framed = torch.tensor([[EOS] + s[::-1] + [BOS]])  # what the backward Stack reads
        out, _ = model.backward_encoder(model.input(framed))
        by_hand = out[0, 1:len(s) + 1].flip(0)  # its state after w_n..w_t, put back at t
        torch.testing.assert_close(c["backward"][i, :len(s), -1], by_hand, rtol=1e-5, atol=1e-6)
        fw, _ = model.forward_encoder(model.input(torch.tensor([[BOS] + s + [EOS]])))
        torch.testing.assert_close(c["forward"][i, :len(s), -1], fw[0, 1:len(s) + 1], rtol=1e-5, atol=1e-6)
        assert c["forward"][i, len(s):].abs().sum() == 0 and c["backward"][i, len(s):].abs().sum() == 0


def test_loss_is_the_mean_of_both_directions_cross_entropy_over_words_and_boundaries():
    model = _bilm().eval()
    batch = _batch(SEQS)
    logits_f, logits_b, _, _ = model.scores(batch)
    nll_f = nll_b = 0.0
    count = 0
    for i, s in enumerate(SEQS):
        framed = [BOS] + s + [EOS]
        for j in range(len(s) + 1):  # forward: framed j predicts j + 1; backward: j + 1 predicts j
            nll_f -= float(logits_f.detach()[i, j].log_softmax(-1)[framed[j + 1]])
            nll_b -= float(logits_b.detach()[i, j].log_softmax(-1)[framed[j]])
            count += 1
    assert math.isclose(float(model.loss(batch).detach()), (nll_f + nll_b) / (2 * count), rel_tol=1e-5)
    f, b, n = model.direction_nll(batch)
    assert n == count and math.isclose(float(f.detach()), nll_f, rel_tol=1e-5)
    ppl = model.perplexity([batch])
    assert math.isclose(ppl["backward"], math.exp(nll_b / count), rel_tol=1e-5)


@pytest.mark.parametrize("tie_weights", [False, True])
def test_learns_a_predictable_language_in_both_directions(tie_weights):
    """Sentences that are runs up or down: each direction can tell the next word from the
    previous two, never from the word itself."""
    seqs = [[4, 5, 6, 7, 8], [8, 7, 6, 5, 4], [5, 6, 7, 8, 9], [9, 8, 7, 6, 5]]
    model = _bilm(tie_weights=tie_weights, encoder={"hidden_sizes": [24], "cell": "gru"})
    before = model.perplexity([_batch(seqs)])
    overfit(model, _batch(seqs), steps=80, lr=0.05)
    after = model.perplexity([_batch(seqs)])
    # the first word after <bos> (and the last before <eos>) is a guess among 4 sentences' starts
    assert before["forward"] > 8 and after["forward"] < 1.6 and after["backward"] < 1.6


def test_refuses_a_bidirectional_encoder_and_bad_ids():
    with pytest.raises(ValueError, match="let it read the token it predicts"):
        BiLanguageModel(vocab_size=V, encoder={"bidirectional": True})
    with pytest.raises(ValueError, match="eos_id must be a token id in"):
        BiLanguageModel(vocab_size=V, eos_id=V)
    with pytest.raises(ValueError, match="bos_id and eos_id must differ"):
        BiLanguageModel(vocab_size=V, bos_id=3, eos_id=3)
    with pytest.raises(ValueError, match=r"token ids in \[0, 11\]"):
        _bilm()(_batch([[4, 12]]))


def test_layer_outputs_end_in_the_stack_output():
    torch.manual_seed(0)
    stack = Stack(6, [8, 8, 8], cell="gru", residual=True, layer_norm=True).eval()
    x, lengths = torch.randn(3, 5, 6), torch.tensor([5, 2, 4])
    outs = layer_outputs(stack, x, lengths)
    assert [o.shape[-1] for o in outs] == [8, 8, 8]
    torch.testing.assert_close(outs[-1], stack(x, lengths=lengths)[0])
    valid = (torch.arange(5) < lengths[:, None])[..., None]
    first = stack.norms[0](stack.layers[0](x, lengths=lengths)[0]) * valid  # layer 1, normed, padding zeroed
    torch.testing.assert_close(outs[0], first)
    assert not torch.allclose(outs[0], outs[1])


def test_rebuilds_from_config():
    model = _bilm().eval()
    twin = rebuild(model)
    batch = _batch(SEQS)
    torch.testing.assert_close(twin.loss(batch), model.loss(batch))


# ------------------------------------------------------------------ contextual features

def _features_head(kind, bilm, freeze=True):
    torch.manual_seed(1)
    contextual = {"bilm": bilm.config, "freeze": freeze}
    if kind == "tagger":
        head = SequenceTagger(vocab_size=8, num_tags=3, embedding_dim=6, encoder={"hidden_sizes": [8], "bidirectional": True},
                              contextual=contextual)
    else:
        head = SequenceClassifier(vocab_size=8, num_classes=2, embedding_dim=6, contextual=contextual)
    # the head's words: <pad> <unk> then six words, two of which the biLM does not know
    itos = ["<pad>", "<unk>", "w4", "w5", "w6", "zzz", "w7", "yyy"]
    stoi = {f"w{i}": i for i in range(4, V)} | {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    known = head.contextual.load_bilm(bilm, itos, stoi)
    return head, known


@pytest.mark.parametrize("kind", ["tagger", "classifier"])
def test_contextual_features_map_the_vocabulary_and_equal_the_bilm_mix(kind):
    bilm = _bilm(encoder={"hidden_sizes": [8, 8], "cell": "lstm"}).eval()  # E = H = 8: token layer mixed in
    head, known = _features_head(kind, bilm)
    assert known == {"known": 5, "total": 7}
    assert head.contextual.bilm_ids.tolist() == [0, 1, 4, 5, 6, 1, 7, 1]
    head.eval()
    ids, lengths = torch.tensor([[2, 5, 3, 0], [6, 7, 2, 4]]), torch.tensor([3, 4])
    with torch.no_grad():
        head.contextual.mix.weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        head.contextual.mix.gamma.fill_(1.5)
    got = head.contextual(ids, lengths)
    c = bilm.contextual({"inputs": torch.tensor([[4, 1, 5, 0], [7, 1, 4, 6]]), "lengths": lengths})
    layers = [torch.cat([c["tokens"], c["tokens"]], -1)] + [
        torch.cat([c["forward"][:, :, k], c["backward"][:, :, k]], -1) for k in range(2)]
    w = torch.tensor([0.5, -1.0, 2.0]).softmax(0)
    torch.testing.assert_close(got, 1.5 * sum(wk * h for wk, h in zip(w, layers)))


def test_frozen_bilm_stays_fixed_and_in_eval_mode_while_the_mix_learns():
    bilm = _bilm(dropout=0.5)
    head, _ = _features_head("tagger", bilm, freeze=True)
    head.train()
    assert not head.contextual.bilm.training
    batch = {"inputs": torch.tensor([[2, 3, 4], [6, 7, 0]]), "lengths": torch.tensor([3, 2]),
             "labels": torch.tensor([[0, 1, 2], [2, 1, -100]])}
    head.loss(batch).backward()
    assert all(p.grad is None for p in head.contextual.bilm.parameters())
    assert head.contextual.mix.weights.grad is not None and head.contextual.mix.gamma.grad.abs() > 0
    tuned, _ = _features_head("tagger", _bilm(), freeze=False)
    tuned.loss(batch).backward()
    assert tuned.contextual.bilm.input.embedding.weight.grad.abs().sum() > 0


def test_head_with_contextual_features_round_trips_through_a_checkpoint_without_the_bilm(tmp_path):
    from rnnkit import checkpoint as ckpt

    head, _ = _features_head("tagger", _bilm())
    head.eval()
    ckpt.save(tmp_path / "tagger", head)
    loaded = ckpt.load(tmp_path / "tagger").model
    batch = {"inputs": torch.tensor([[2, 3, 4], [6, 7, 0]]), "lengths": torch.tensor([3, 2])}
    torch.testing.assert_close(loaded(batch), head(batch))
    assert loaded.contextual.bilm_ids.tolist() == head.contextual.bilm_ids.tolist()


def test_contextual_option_errors_name_the_problem():
    with pytest.raises(ValueError, match="checkpoint is read by rnnkit train"):
        SequenceTagger(vocab_size=8, num_tags=3, contextual={"checkpoint": "runs/x"})
    with pytest.raises(ValueError, match="contextual takes bilm"):
        SequenceTagger(vocab_size=8, num_tags=3, contextual={"freeze": True})
    with pytest.raises(ValueError, match="need token-id inputs"):
        SequenceClassifier(input_size=3, num_classes=2, contextual={"bilm": _bilm().config})
    with pytest.raises(ValueError, match="another config"):
        ContextualFeatures(bilm=_bilm().config, vocab_size=4).load_bilm(
            _bilm(tie_weights=True), ["<pad>", "<unk>", "a", "b"], {})


def test_loss_count_is_what_the_loss_averages_over():
    """A distributed run weights each process's loss by it: it must be direction_nll's count."""
    import torch

    from rnnkit.models import BiLanguageModel

    torch.manual_seed(0)
    model = BiLanguageModel(vocab_size=12, bos_id=2, eos_id=3, embedding_dim=4, encoder={"hidden_sizes": [4]})
    batch = {"inputs": torch.tensor([[5, 6, 7], [8, 9, 0]]), "lengths": torch.tensor([3, 2])}
    assert model.loss_count(batch) == model.direction_nll(batch)[2] == 3 + 1 + 2 + 1
