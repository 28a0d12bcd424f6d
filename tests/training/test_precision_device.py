"""trainer.precision (autocast, fp16's grad scaler), trainer.device and trainer.backend, and the
pieces distributed evaluation stands on (merging metric accumulators), in one process."""

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.models import SequenceTagger
from rnnkit.training import ClassificationMetrics, PerplexityMetrics, TaggingMetrics, Trainer, TrainerConfig
from rnnkit.training.trainer import resolve_device, setup_distributed


class AutocastSpy(SequenceTagger):
    """A tagger that notes, at every loss, whether CPU autocast is on and in which dtype."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def loss(self, batch):
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return super().loss(batch)


def _batch(seed=0, B=4, T=5):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, 10, (B, T), generator=g), "lengths": torch.tensor([T, 3, 4, 2][:B]),
            "labels": torch.randint(0, 3, (B, T), generator=g), "chars": torch.randint(1, 6, (B, T, 3), generator=g)}


def _tagger(cls=SequenceTagger, cell="lstm"):
    torch.manual_seed(0)
    return cls(vocab_size=10, num_tags=3, embedding_dim=8, char_vocab_size=6,
               encoder={"cell": cell, "hidden_sizes": [8], "bidirectional": True})


def _config(tmp_path, **kw):
    return TrainerConfig(**{"epochs": 10, "progress": False, "plots": False, "num_threads": 1,
                            "out_dir": str(tmp_path / "run"), "optimizer": {"lr": 0.05}, **kw})


@pytest.mark.parametrize("precision, dtype", [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_precision_runs_training_and_dev_under_autocast(tmp_path, precision, dtype):
    """A character BiLSTM included: CPU autocast alone sends torch's LSTM kernel to oneDNN in
    bfloat16 beside float32 weights, which fails; the recurrence runs it in float32."""
    head = _tagger(AutocastSpy)
    trainer = Trainer(head, _config(tmp_path, precision=precision), train=[_batch()], dev=[_batch(1)])
    history = trainer.fit()
    assert head.seen and set(head.seen) == {dtype}  # every training step and every dev batch
    assert history[-1]["train_loss"] < 0.2 * history[0]["train_loss"]  # it learns
    assert {p.dtype for p in head.parameters()} == {torch.float32}  # weights stay float32
    assert trainer.scaler.is_enabled() == (precision == "fp16")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bf16_loss_is_near_the_fp32_loss(cell):
    head, batch = _tagger(cell=cell), _batch()
    with torch.no_grad():
        fp32 = float(head.loss(batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = float(head.loss(batch))
    assert 0 < abs(bf16 - fp32) < 0.01 * fp32  # bfloat16 keeps about 3 significant digits


def test_fp16_grad_scaler_state_is_saved_and_resumed(tmp_path):
    trainer = Trainer(_tagger(), _config(tmp_path, epochs=2, precision="fp16"), train=[_batch()])
    trainer.fit()
    saved = ckpt.load_state(tmp_path / "run" / "last")["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale() and saved["_growth_tracker"] == 2
    again = Trainer(_tagger(), _config(tmp_path, epochs=3, precision="fp16"), train=[_batch()])
    again._resume(tmp_path / "run" / "last")
    assert again.scaler.state_dict() == trainer.scaler.state_dict()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_asking_for_an_absent_device_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"trainer.device is 'cuda' but torch sees no CUDA device"):
        Trainer(_tagger(), _config(tmp_path, device="cuda"), train=[_batch()])
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="trainer.device must be one of auto, cpu, cuda, mps; got 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="the error is for machines without MPS")
def test_asking_for_absent_mps_is_an_error():
    with pytest.raises(ValueError, match=r"trainer.device is 'mps' but torch.backends.mps.is_available\(\) is False"):
        resolve_device("mps")


def test_nccl_on_the_cpu_is_refused_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="trainer.backend 'nccl' runs on CUDA devices only; this run's device is cpu"):
        setup_distributed("nccl", "cpu")
    with pytest.raises(ValueError, match="trainer.backend must be one of auto, gloo, nccl; got 'mpi'"):
        setup_distributed("mpi", "cpu")


@pytest.mark.parametrize("make", [lambda: TaggingMetrics(["B-X", "I-X", "O"]), lambda: PerplexityMetrics()])
def test_merged_accumulators_equal_one_over_all_batches(make):
    """What distributed evaluation does: each process fills its own, rank 0 merges them."""
    head = _tagger()
    batches = [_batch(seed) for seed in range(5)]
    whole = make()
    for b in batches:
        whole.update(head, b, float(head.loss(b)))
    parts = []
    for rank in range(2):
        m = make()
        for b in batches[rank::2]:
            m.update(head, b, float(head.loss(b)))
        parts.append(m)
    parts[0].merge(parts[1])
    assert parts[0].compute() == pytest.approx(whole.compute())
    assert parts[1].compute() != pytest.approx(whole.compute())  # one share alone is not the whole


def test_merged_classification_metrics_keep_every_example():
    a, b = ClassificationMetrics(["x", "y"]), ClassificationMetrics(["x", "y"])
    a.gold, a.pred, b.gold, b.pred = [0, 1], [0, 0], [1, 1], [1, 0]
    a.merge(b)
    assert (a.gold, a.pred) == ([0, 1, 1, 1], [0, 0, 1, 0]) and a.compute()["accuracy"] == 0.5


def test_loss_count_is_what_the_loss_averages_over():
    softmax, batch = _tagger(), _batch()
    batch["labels"][0, 1] = -100  # an unlabelled token inside the sentence
    assert softmax.loss_count(batch) == 5 + 3 + 4 + 2 - 1
    crf = SequenceTagger(vocab_size=10, num_tags=3, output="crf")
    assert crf.loss_count(batch) == 4


def test_every_metrics_accumulator_can_be_merged():
    """Distributed evaluation merges whatever accumulator the head uses: one without merge()
    would fail only under --nproc."""
    import inspect

    from rnnkit.training import metrics as m

    accumulators = [cls for _, cls in inspect.getmembers(m, inspect.isclass)
                    if cls.__module__ == m.__name__ and hasattr(cls, "update")]
    assert len(accumulators) >= 7
    assert [cls.__name__ for cls in accumulators if not callable(getattr(cls, "merge", None))] == []


def test_merged_forecast_and_class_perplexity_metrics_keep_every_row():
    import torch

    from rnnkit.training.metrics import ClassPerplexityMetrics, ForecastMetrics

    a, b = ClassPerplexityMetrics(["neg", "pos"]), ClassPerplexityMetrics(["neg", "pos"])
    a.nll, a.tokens, b.nll, b.tokens = [2.0, 0.0], [2, 0], [1.0, 3.0], [1, 3]
    a.merge(b)
    assert (a.nll, a.tokens) == ([3.0, 3.0], [3, 3])
    f, g = ForecastMetrics([1.0]), ForecastMetrics([1.0])
    for acc, v in ((f, 1.0), (g, 3.0)):
        acc.gold.append(torch.zeros(1, 2, 1, dtype=torch.float64))
        acc.pred.append(torch.full((1, 2, 1), v, dtype=torch.float64))
        acc.base.append(torch.zeros(1, 2, 1, dtype=torch.float64))
    f.merge(g)
    assert f.compute()["mae"] == pytest.approx(2.0)
