import pytest
import torch

from heads_util import overfit, pad_more, rebuild
from rnnkit.models import Seq2Seq

VS, VT, BOS, EOS = 11, 9, 2, 3


def _batch():
    """Three pairs; targets are BOS .. EOS, padded with 0."""
    inputs = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 0, 0, 0], [5, 5, 7, 0, 0]])
    targets = torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, EOS, 0, 0], [BOS, 8, 8, EOS, 0]])
    return {"inputs": inputs, "lengths": torch.tensor([5, 2, 3]),
            "targets": targets, "target_lengths": torch.tensor([5, 3, 4])}


GOLD = [[4, 5, 6], [7], [8, 8]]


def _model(context="attention", cell="gru", **kw):
    torch.manual_seed(0)
    enc = kw.pop("encoder", {"hidden_sizes": [16], "bidirectional": True, "cell": cell})
    dec = kw.pop("decoder", None if kw.get("share_weights") else {"hidden_sizes": [20], "cell": cell})
    return Seq2Seq(source_vocab_size=VS, target_vocab_size=VT, embedding_dim=12, encoder=enc, decoder=dec,
                   context=context, **kw)


@pytest.mark.parametrize("context,attention,cell", [
    ("init", "additive", "gru"), ("input", "additive", "lstm"),
    ("attention", "additive", "lstm"), ("attention", "general", "gru")])
def test_overfits_tiny_batch_and_decodes_it(context, attention, cell):
    model = _model(context, cell, attention=attention)
    batch = _batch()
    start = float(model.loss(batch).detach())
    assert overfit(model, batch, steps=120) < 0.02 * start
    assert model.predict(batch) == GOLD
    assert model.predict(batch, beam_size=3) == GOLD


def test_shared_encoder_decoder_overfits_and_stores_one_stack():
    model = _model("init", encoder={"hidden_sizes": [24, 24]}, share_weights=True)
    assert model.decoder is None and not any(k.startswith("decoder") for k in model.state_dict())
    batch = _batch()
    assert overfit(model, batch, steps=150) < 0.05
    assert model.predict(batch) == GOLD


def test_dot_attention_needs_equal_sizes():
    with pytest.raises(ValueError, match="kind='dot' needs query_size == key_size; got 20 and 32"):
        _model("attention", attention="dot")
    model = _model("attention", attention="dot", decoder={"hidden_sizes": [32]})
    assert torch.isfinite(model.loss(_batch()))


def test_bridge_handles_bidirectional_and_depth_mismatch():
    model = _model("init", encoder={"hidden_sizes": [6, [5, 7], 4], "bidirectional": True, "cell": "lstm"},
                   decoder={"hidden_sizes": [9, 3], "cell": "gru"})
    model.loss(_batch()).backward()
    first = model.encoder.layers[0].forward_layer.cell.weight_hh.grad
    assert first is not None and first.abs().sum() > 0  # every encoder layer reaches the decoder


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_attention_weights_sum_to_one_with_zero_on_padding(kind):
    model = _model("attention", attention=kind, decoder={"hidden_sizes": [32]}).eval()
    batch = _batch()
    w = model.attention_weights(batch)  # (B, T'-1, S)
    assert w.shape == (3, 4, 5)
    assert torch.allclose(w.sum(-1), torch.ones(3, 4), atol=1e-6)
    pad = torch.arange(5) >= batch["lengths"][:, None]  # (B, S)
    assert torch.equal(w.masked_select(pad[:, None].expand_as(w)), torch.zeros(int(pad.sum()) * 4))
    assert bool((w.masked_select(~pad[:, None].expand_as(w)) > 0).all())


@pytest.mark.parametrize("context", ["init", "input", "attention"])
def test_padding_never_changes_output(context):
    model = _model(context, "lstm").eval()
    batch = _batch()
    longer = dict(batch, inputs=pad_more(batch["inputs"], 3, high=VS),
                  targets=pad_more(batch["targets"], 2, high=VT))
    with torch.no_grad():
        ref = model(batch)
        out = model(longer)[:, :4]
        real = torch.arange(4) < (batch["target_lengths"] - 1)[:, None]
        assert torch.allclose(out[real], ref[real], atol=1e-5)
        assert torch.allclose(model.loss(longer), model.loss(batch), atol=1e-6)
    assert model.predict(longer, max_length=6) == model.predict(batch, max_length=6)
    assert model.predict(longer, beam_size=3, max_length=6) == model.predict(batch, beam_size=3, max_length=6)
    alone = {k: v[1:2] for k, v in batch.items()}
    alone["inputs"] = alone["inputs"][:, :2]
    with torch.no_grad():
        assert torch.allclose(model(alone)[0, :2], ref[1, :2], atol=1e-5)


@pytest.mark.parametrize("context", ["init", "input"])
def test_whole_target_pass_equals_step_by_step(context):
    model = _model(context, "lstm").eval()
    batch = _batch()
    with torch.no_grad():
        fast = model(batch)
        states, extra = model.encode(batch)
        steps = []
        for t in range(4):
            logits, states, _ = model._decode_step(batch["targets"][:, t], states, extra)
            steps.append(logits)
    real = torch.arange(4) < (batch["target_lengths"] - 1)[:, None]
    assert torch.allclose(fast[real], torch.stack(steps, 1)[real], atol=1e-5)


def test_beam_size_one_equals_greedy():
    model = _model("attention", "lstm").eval()
    torch.manual_seed(1)
    batch = {"inputs": torch.randint(1, VS, (6, 5)), "lengths": torch.tensor([5, 4, 3, 2, 1, 5])}
    greedy = model.predict(batch, beam_size=1, max_length=8)
    assert model.predict(batch, beam_size=1, max_length=8) == greedy
    from rnnkit.models import beam_search
    states, extra = model.encode(batch)
    lp, bundle = model._step(torch.full((6,), BOS), (states, extra))
    assert beam_search(model._step, bundle, lp, beam_size=1, max_length=8, eos_id=EOS) == greedy
    assert all(0 not in row and BOS not in row for row in greedy)


def test_teacher_forcing_ratio_zero_feeds_own_predictions():
    batch = _batch()
    changed = dict(batch, targets=batch["targets"].clone())
    changed["targets"][:, 1] = 1  # different gold inputs after BOS (labels change too)
    for ratio, same in ((0.0, True), (1.0, False)):
        model = _model("attention", teacher_forcing=ratio).train()
        a, b = model(batch), model(changed)
        assert torch.allclose(a[:, 1:], b[:, 1:]) == same
    model.eval()  # evaluation always feeds the gold tokens
    assert not torch.allclose(model(batch)[:, 1:], model(changed)[:, 1:])


def test_config_rebuilds_same_model():
    model = _model("attention", "lstm", attention="general").eval()
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(rebuild(model)(batch), model(batch))


def test_bad_input_raises_clear_errors():
    model = _model(max_length=4)
    batch = _batch()
    with pytest.raises(ValueError, match=r"batch\['inputs'\] holds a sequence of length 5, longer than max_length = 4"):
        model.loss(batch)
    model = _model()
    bad = batch["targets"].clone()
    bad[0, 2] = VT
    with pytest.raises(ValueError, match=r"batch\['targets'\] must hold token ids in \[0, 8\]"):
        model.loss(dict(batch, targets=bad))
    with pytest.raises(ValueError, match=r"target_lengths'\] must be in \[2, T'\]"):
        model.loss(dict(batch, target_lengths=torch.tensor([5, 1, 4])))
    with pytest.raises(ValueError, match=r"batch\['inputs'\] must hold token ids in \[0, 10\]"):
        model.predict(dict(batch, inputs=batch["inputs"] + VS))
    with pytest.raises(ValueError, match="batch is empty"):
        model.predict({"inputs": torch.zeros(0, 3, dtype=torch.long), "lengths": torch.zeros(0, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"missing key\(s\) 'targets'"):
        model.loss({"inputs": batch["inputs"], "lengths": batch["lengths"]})


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"decoder\['bidirectional'\] must be False"):
        _model(decoder={"bidirectional": True})
    with pytest.raises(ValueError, match="share_weights=True needs context='init'"):
        _model("attention", share_weights=True, encoder={"hidden_sizes": [8]})
    with pytest.raises(ValueError, match=r"encoder\['bidirectional'\] must be False"):
        _model("init", share_weights=True)
    with pytest.raises(ValueError, match="context must be one of init, input, attention; got 'both'"):
        _model("both")
    with pytest.raises(ValueError, match=r"teacher_forcing must be a float in \[0, 1\]"):
        _model(teacher_forcing=1.5)
