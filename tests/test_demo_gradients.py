"""rnnkit demo --gradients at tiny sizes: the task's label is its first token's class and nothing
else; the report has one curve per model and layer, of length T; the gradient of a tanh RNN at
initialisation fades by orders of magnitude more than an LSTM's; training learns and a
divergence is reported, not hidden; the CLI writes the picture and the JSON."""

import io
import json

import pytest
import torch

from rnnkit.demo_gradients import (MODELS, _encoder, _ratio, _train_length, label_of, make_task,
                                   run_gradients_demo)
from rnnkit.inspect import gradients_through_time
from rnnkit.models import SequenceClassifier


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_the_label_is_the_first_tokens_class_and_nothing_else():
    K, noise = 4, 8
    batch = make_task(400, 12, classes=K, noise=noise, generator=torch.Generator().manual_seed(0))
    inputs, labels = batch["inputs"], batch["labels"]
    assert inputs.shape == (400, 12) and batch["lengths"].tolist() == [12] * 400
    assert torch.equal(labels, inputs[:, 0] - 1) and set(labels.tolist()) == set(range(K))
    # the markers appear first and only first: the tail is noise, drawn alike for every label
    tail = inputs[:, 1:]
    assert bool(((tail > K) & (tail <= K + noise)).all())
    for token in range(K + 1, K + noise + 1):
        assert set(labels[inputs[:, 1] == token].tolist()) == set(range(K))
    # changing every later token leaves each label as it was; changing the first one does not
    other = inputs.clone()
    other[:, 1:] = torch.randint(K + 1, K + noise + 1, tail.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(label_of(other, K), labels)
    other[:, 0] = (inputs[:, 0] % K) + 1
    assert not torch.equal(label_of(other, K), labels)
    with pytest.raises(ValueError, match=r"first token .* marker 1\.\.4; got \[5\]"):
        label_of(torch.full((2, 3), 5), K)
    with pytest.raises(ValueError, match="length must be an integer >= 1; got 0"):
        make_task(3, 0)


def test_training_lengths_span_2_to_T_uniform_or_log_uniform():
    g = torch.Generator().manual_seed(0)
    uniform = [_train_length(200, "uniform", g) for _ in range(4000)]
    log_uniform = [_train_length(200, "log-uniform", g) for _ in range(4000)]
    for drawn in (uniform, log_uniform):
        assert min(drawn) == 2 and max(drawn) == 200
    share_short = lambda drawn: sum(n <= 20 for n in drawn) / len(drawn)  # noqa: E731
    assert share_short(uniform) == pytest.approx(19 / 199, abs=0.02)
    assert share_short(log_uniform) == pytest.approx(0.5, abs=0.03)  # 20 = sqrt(2 * 200): the median


def _init_ratio(key: str, T: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = SequenceClassifier(vocab_size=13, num_classes=4, embedding_dim=16,
                               encoder=_encoder(key, 32), pooling="last")
    batch = make_task(32, T, generator=torch.Generator().manual_seed(seed))
    return _ratio(gradients_through_time(model, batch))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_init_a_tanh_rnns_gradient_fades_orders_of_magnitude_more_than_an_lstms(seed):
    tanh_short, tanh = _init_ratio("tanh", 5, seed), _init_ratio("tanh", 30, seed)
    lstm = _init_ratio("lstm", 30, seed)
    assert tanh < 1e-4 * tanh_short  # 25 more steps back: a factor below 1 each time
    assert tanh < 1e-2 * lstm  # the forget gate (bias 1) lets more of it through


def test_report_has_one_curve_per_model_and_layer_and_the_table(tmp_path, pure_paths):
    out = io.StringIO()
    report = run_gradients_demo(tmp_path, length=9, steps=4, models=["tanh", "lstm", "deep-tanh-res-ln"],
                                hidden_size=8, test_size=40, stream=out)
    saved = _strict_json(tmp_path / "gradients.json")
    assert saved == json.loads(json.dumps(report))
    assert list(saved["models"]) == ["tanh", "lstm", "deep-tanh-res-ln"]
    for key, layers in (("tanh", 1), ("lstm", 1), ("deep-tanh-res-ln", 4)):
        r = saved["models"][key]
        for when in ("init", "trained"):
            curves = [e["norm_by_position"] for e in r[when]["layers"]]
            assert len(curves) == layers and all(len(c) == 9 for c in curves)
            assert all(v > 0 for c in curves for v in c)
        assert r["ratio_init"] == pytest.approx(r["init"]["layers"][0]["norm_by_position"][0]
                                                / r["init"]["layers"][0]["norm_by_position"][-1])
        assert r["steps_run"] == 4 and r["diverged_at"] is None and 0 <= r["accuracy"] <= 1
    assert saved["models"]["deep-tanh-res-ln"]["encoder"]["residual"] is True
    text = out.getvalue()
    for r in saved["models"].values():
        assert f"{r['accuracy']:.1%}" in text and r["name"] in text
    assert (tmp_path / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_an_lstm_learns_the_task_at_a_short_length(tmp_path, pure_paths):
    report = run_gradients_demo(tmp_path, length=8, steps=150, models=["lstm"], hidden_size=16,
                                test_size=200, lr=1e-2, stream=io.StringIO())
    lstm = report["models"]["lstm"]
    assert lstm["accuracy"] > 0.95 and lstm["learned"] and lstm["steps_run"] == 150


def test_a_divergence_is_reported_with_the_step_and_json_stays_json(tmp_path, pure_paths):
    # a ReLU RNN without clipping at a learning rate far too large: its loss stops being finite
    report = run_gradients_demo(tmp_path, length=50, steps=50, models=["relu"], clip=0, lr=1.0,
                                test_size=20, stream=io.StringIO())
    relu = report["models"]["relu"]
    assert relu["diverged_at"] is not None and relu["steps_run"] == relu["diverged_at"] - 1
    assert relu["not_finite"] in ("the loss", "the gradient norm")
    assert not relu["learned"]
    _strict_json(tmp_path / "gradients.json")


def test_bad_arguments_name_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match="models must be one or more of tanh, relu, gru.*; got rnn"):
        run_gradients_demo(tmp_path, models=["rnn"])
    with pytest.raises(ValueError, match="length must be at least 2"):
        run_gradients_demo(tmp_path, length=1)
    with pytest.raises(ValueError, match="lengths must be one of uniform, log-uniform; got 'random'"):
        run_gradients_demo(tmp_path, lengths="random")
    assert set(MODELS) >= {"tanh", "relu", "gru", "lstm", "deep-tanh", "deep-tanh-res-ln"}


def test_cli_demo_gradients_writes_png_and_json(tmp_path, pure_paths, capsys):
    from rnnkit.cli import main

    assert main(["demo", "--gradients", "--length", "6", "--steps", "3", "--models", "tanh,gru",
                 "--out", str(tmp_path), "--clip", "0", "--lengths", "log-uniform"]) == 0
    text = capsys.readouterr().out
    saved = _strict_json(tmp_path / "gradients.json")
    assert list(saved["models"]) == ["tanh", "gru"] and saved["task"]["clip"] is None
    assert saved["task"]["length"] == 6 and saved["task"]["train_lengths"] == "log-uniform"
    assert "|dL/dh_1| / |dL/dh_T|" in text
    assert (tmp_path / "gradients.png").stat().st_size > 1000
    assert main(["demo", "--steps", "3"]) == 2
    assert "--steps is an option of rnnkit demo --gradients" in capsys.readouterr().err
    assert main(["demo", "--gradients", "--epochs", "3"]) == 2
    assert "--epochs is an option of the Teddy demo" in capsys.readouterr().err
    assert main(["demo", "--gradients", "--progress"]) == 2
    assert "--progress is an option of the Teddy demo" in capsys.readouterr().err
    assert main(["demo", "--gradients", "--models", "tanh,nope", "--out", str(tmp_path)]) == 2
    assert "got tanh, nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--gradients", "--length", "1"])
    assert "must be an integer >= 2; got 1" in capsys.readouterr().err
