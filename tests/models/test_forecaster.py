import pytest
import torch

from heads_util import overfit, pad_more, rebuild
from rnnkit.models import Forecaster, make_windows


def _series(N=60, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(N, dtype=torch.float32)[:, None]
    # Different offsets and scales per feature, so the scaler has work to do.
    return torch.sin(t / 3 + torch.arange(D)) * torch.tensor([1.0, 10.0, 0.1])[:D] + \
        torch.tensor([5.0, -20.0, 0.0])[:D] + 0.01 * torch.randn(N, D, generator=g)


def _model(mode="direct", **kw):
    torch.manual_seed(0)
    enc = kw.pop("encoder", {"hidden_sizes": [24], "cell": "lstm"})
    return Forecaster(input_size=3, horizon=3, mode=mode, encoder=enc, **kw)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_overfits_tiny_batch_and_predicts_in_original_units(mode):
    batch = make_windows(_series(), window=8, horizon=3, stride=9)
    model = _model(mode).fit_scaler(batch["inputs"])
    start = float(model.loss(batch).detach())
    assert overfit(model, batch, steps=300, lr=0.02) < 0.01 * start
    err = (model.predict(batch) - batch["labels"]).abs() / model.scale_
    assert float(err.max()) < 0.2


def test_target_subset_with_bidirectional_encoder():
    batch = make_windows(_series(), window=8, horizon=3, stride=9, target_indices=[1])
    assert batch["labels"].shape[-1] == 1
    model = _model(target_indices=[1], encoder={"hidden_sizes": [16], "bidirectional": True})
    model.fit_scaler(batch["inputs"])
    assert overfit(model, batch, steps=150, lr=0.02) < 5e-3
    assert model.predict(batch).shape == (len(batch["inputs"]), 3, 1)


def test_scaler_is_fitted_on_training_data_only():
    series = _series(80)
    train, test = make_windows(series[:50], window=8, horizon=3), make_windows(series[50:] * 3, window=8, horizon=3)
    model = _model().fit_scaler(series[:50])  # a (N, D) series or (B, T, D) windows
    assert torch.allclose(model.mean_, series[:50].mean(0), atol=1e-4)
    assert torch.allclose(model.scale_, series[:50].std(0, unbiased=False), atol=1e-4)
    saved = (model.mean_.clone(), model.scale_.clone())
    model.loss(test)
    model.predict(test)
    assert torch.equal(model.mean_, saved[0]) and torch.equal(model.scale_, saved[1])
    assert torch.equal(rebuild(model).scale_, model.scale_)  # saved with the weights
    with pytest.raises(ValueError, match=r"call model.fit_scaler\(train_inputs\)"):
        _model().loss(train)


def test_autoregressive_rollout_equals_teacher_forcing_on_its_own_forecasts():
    batch = make_windows(_series(), window=8, horizon=3, stride=5)
    model = _model("autoregressive", encoder={"hidden_sizes": [8, 8], "cell": "gru"}).fit_scaler(batch["inputs"])
    model.eval()
    with torch.no_grad():
        rolled = model(batch)
        assert torch.allclose(model(batch, teacher=rolled), rolled, atol=1e-5)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_padding_never_changes_output(mode):
    batch = make_windows(_series(), window=8, horizon=3, stride=9)
    model = _model(mode).fit_scaler(batch["inputs"]).eval()
    batch["lengths"] = torch.tensor([8, 5, 3, 8, 1, 6])[:len(batch["lengths"])]
    longer = dict(batch, inputs=pad_more(batch["inputs"], 4))
    junk = longer["inputs"].clone()
    for b, n in enumerate(batch["lengths"].tolist()):
        junk[b, n:] = torch.randn(junk.shape[1] - n, 3) * 100
    ref = model.predict(batch)
    assert torch.allclose(model.predict(dict(longer, inputs=junk)), ref, atol=1e-4)
    alone = {"inputs": batch["inputs"][1:2, :5], "lengths": torch.tensor([5])}
    assert torch.allclose(model.predict(alone)[0], ref[1], atol=1e-4)


def test_bad_input_and_arguments():
    batch = make_windows(_series(), window=8, horizon=3)
    model = _model(max_length=6).fit_scaler(batch["inputs"])
    with pytest.raises(ValueError, match="length 8, longer than max_length = 6"):
        model.predict(batch)
    model = _model().fit_scaler(batch["inputs"])
    with pytest.raises(ValueError, match=r"batch\['labels'\] must be float values of shape \(B, horizon, D_out\)"):
        model.loss(dict(batch, labels=batch["labels"][:, :2]))
    with pytest.raises(ValueError, match=r"batch\['inputs'\] must be float values of shape \(B, T, D\) with D = input_size = 3"):
        model.predict(dict(batch, inputs=batch["inputs"][..., :2]))
    with pytest.raises(ValueError, match="batch is empty"):
        model.predict({"inputs": torch.zeros(0, 8, 3), "lengths": torch.zeros(0, dtype=torch.long)})
    with pytest.raises(ValueError, match="autoregressive.*must forecast every feature"):
        Forecaster(input_size=3, horizon=2, mode="autoregressive", target_indices=[0])
    with pytest.raises(ValueError, match=r"target_indices must be distinct feature indices in \[0, 2\]"):
        Forecaster(input_size=3, horizon=2, target_indices=[3])
    with pytest.raises(ValueError, match=r"series has N = 5 steps; window \+ horizon = 11"):
        make_windows(_series(5), window=8, horizon=3)
