"""CTC against brute force over every path on a tiny alphabet: the loss (torch.nn.CTCLoss), greedy
(best path) and prefix-beam (most probable labelling) decoding; a Transcriber overfits a batch."""

import itertools
import math

import pytest
import torch

from rnnkit.models import Transcriber, collapse, ctc_greedy, ctc_prefix_beam


def all_paths(T: int, S: int):
    return itertools.product(range(S), repeat=T)


def labelling_probs(logp: torch.Tensor) -> dict:
    """{labelling: probability}, summed over all S^T paths of (T, S) log-probabilities."""
    T, S = logp.shape
    out: dict = {}
    for path in all_paths(T, S):
        p = math.exp(sum(float(logp[t, s]) for t, s in enumerate(path)))
        key = tuple(collapse(path))
        out[key] = out.get(key, 0.0) + p
    return out


def random_log_probs(seed: int, T: int, S: int, sharpness: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharpness * torch.randn(T, S, generator=g, dtype=torch.float64), -1)


@pytest.mark.parametrize("seed,target", [(0, [1]), (1, [1, 2]), (2, [2, 2]), (3, [1, 2, 1]), (4, [])])
def test_ctc_loss_is_the_sum_over_alignments(seed, target):
    T, S = 5, 3
    logp = random_log_probs(seed, T, S)
    brute = labelling_probs(logp).get(tuple(target), 0.0)
    loss = torch.nn.functional.ctc_loss(logp[:, None], torch.tensor([target + [0] * (3 - len(target))]),
                                        torch.tensor([T]), torch.tensor([len(target)]), reduction="sum")
    assert float(loss) == pytest.approx(-math.log(brute), rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_the_best_path_and_beam_the_best_labelling(seed):
    T, S = 5, 3
    logp = random_log_probs(seed, T, S, sharpness=1.0)  # flat: best path and best labelling often differ
    best_path = max(all_paths(T, S), key=lambda p: sum(float(logp[t, s]) for t, s in enumerate(p)))
    assert ctc_greedy(logp[None], torch.tensor([T])) == [collapse(best_path)]
    probs = labelling_probs(logp)
    best = max(probs, key=probs.get)
    exact = ctc_prefix_beam(logp[None], torch.tensor([T]), beam_size=10_000)
    assert exact == [list(best)]
    narrow = ctc_prefix_beam(logp[None], torch.tensor([T]), beam_size=3)[0]
    assert probs.get(tuple(narrow), 0.0) <= probs[best] + 1e-12


def test_decoders_respect_lengths():
    logp = random_log_probs(7, 6, 3)[None].repeat(2, 1, 1)
    lengths = torch.tensor([6, 3])
    assert ctc_greedy(logp, lengths)[1] == ctc_greedy(logp[:, :3], torch.tensor([3, 3]))[1]
    assert ctc_prefix_beam(logp, lengths)[1] == ctc_prefix_beam(logp[:1, :3], torch.tensor([3]))[0]


def batch_of(targets, D=4, frames=12, seed=0):
    """Frames that encode their target: symbol k lights feature k for a few frames."""
    g = torch.Generator().manual_seed(seed)
    B, U = len(targets), max(len(t) for t in targets)
    x = 0.1 * torch.randn(B, frames, D, generator=g)
    for b, t in enumerate(targets):
        for i, k in enumerate(t):
            x[b, 1 + 3 * i:3 + 3 * i, k] += 1.0
    y = torch.zeros(B, U, dtype=torch.long)
    for b, t in enumerate(targets):
        y[b, :len(t)] = torch.tensor(t)
    return {"inputs": x, "lengths": torch.full((B,), frames), "targets": y,
            "target_lengths": torch.tensor([len(t) for t in targets])}


@pytest.mark.parametrize("pyramid,decoding", [(0, "greedy"), (1, "beam")])
def test_transcriber_overfits_a_tiny_batch(pyramid, decoding):
    torch.manual_seed(0)
    targets = [[1, 2, 3], [3, 3, 1], [2, 1], [1, 1, 2]]
    batch = batch_of(targets)
    model = Transcriber(input_size=4, num_symbols=4, pyramid=pyramid, decoding=decoding, beam_size=4,
                        encoder={"cell": "lstm", "hidden_sizes": [24, 24], "bidirectional": True})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(120):
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05
    assert model.predict(batch) == targets
    assert model.output_lengths(torch.tensor([12, 7])).tolist() == [12 // 2 ** pyramid, 7 // 2 ** pyramid]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="pyramid must be below the number of encoder layers"):
        Transcriber(input_size=4, num_symbols=4, pyramid=1)
    with pytest.raises(ValueError, match="decoding must be one of greedy, beam"):
        Transcriber(input_size=4, num_symbols=4, decoding="viterbi")
    model = Transcriber(input_size=4, num_symbols=4, encoder={"hidden_sizes": [8, 8]}, pyramid=1)
    batch = batch_of([[1, 2, 3]], frames=5)  # 2 output frames for 3 symbols
    with pytest.raises(ValueError, match="has 2 output frames for a target that needs 3"):
        model.loss(batch)
    batch = batch_of([[1, 1]], frames=6)  # 3 output frames; a repeat needs a blank between: 3 is enough
    model.loss(batch)
    with pytest.raises(ValueError, match=r"symbol ids in 1..3 \(0 is the blank\)"):
        model.loss({**batch, "targets": torch.tensor([[0, 1]])})


def test_error_rates_merge_and_match_edit_distance():
    pytest.importorskip("jiwer")
    from rnnkit.training.metrics import ErrorRateMetrics

    class Fixed:  # a "model" whose predictions are given
        def __init__(self, rows):
            self.rows = rows

        def predict(self, batch):
            return self.rows

    itos = ["<blank>", "1", "2", "3"]
    gold = [[1, 2, 3, 0], [2, 2, 0, 0], [3, 1, 2, 1]]
    pred = [[1, 3], [2, 2], [3, 1, 1, 2, 1]]  # "123" -> "13": 1 deletion; "22": 0; "3121" -> "31121": 1 insertion
    batch = lambda rows: {"targets": torch.tensor(rows), "target_lengths": torch.tensor([3, 2, 4])[:len(rows)]}
    whole = ErrorRateMetrics(itos)
    whole.update(Fixed(pred), batch(gold))
    out = whole.compute()
    assert out["cer"] == pytest.approx((1 + 0 + 1) / (3 + 2 + 4))
    assert out["sequence_accuracy"] == pytest.approx(1 / 3)
    a, b = ErrorRateMetrics(itos), ErrorRateMetrics(itos)
    a.update(Fixed(pred[:1]), batch(gold[:1]))
    b.update(Fixed(pred[1:]), {"targets": torch.tensor(gold[1:]), "target_lengths": torch.tensor([2, 4])})
    a.merge(b)
    assert a.compute() == pytest.approx(out)
    model = Transcriber(input_size=4, num_symbols=4)
    assert model.loss_count(batch(gold)) == 9


def test_save_load_gives_the_same_outputs(tmp_path):
    from rnnkit import checkpoint

    model = Transcriber(input_size=4, num_symbols=4, pyramid=1, decoding="beam",
                        encoder={"cell": "gru", "hidden_sizes": [6, 5], "bidirectional": [True, False]}).eval()
    checkpoint.save(tmp_path / "ckpt", model)
    loaded = checkpoint.load(tmp_path / "ckpt").model
    assert type(loaded) is Transcriber and loaded.config == model.config
    batch = batch_of([[1, 2], [3]])
    with torch.no_grad():
        assert torch.equal(model(batch)[0], loaded(batch)[0])
