"""Row-sparse updates of hashed bigram tables: lazy Adam against torch's Adam and SparseAdam,
clipping with sparse gradients against clip_grad_norm_, and the trainer end to end."""

import pytest
import torch
from torch import nn

from rnnkit.models import SequenceTagger
from rnnkit.training import TaggingMetrics, Trainer, TrainerConfig
from rnnkit.training.sparse_rows import LazyRowsAdam, LazyRowsAdamW, clip_grad_norm

from test_trainer import TAGS, tagging_batches


def _tables(seed=0):
    torch.manual_seed(seed)
    a = nn.Embedding(6, 3, sparse=True)
    b = nn.Embedding(6, 3)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("kind, reference, wd", [(LazyRowsAdam, torch.optim.Adam, 0.01),
                                                 (LazyRowsAdamW, torch.optim.AdamW, 0.1)])
def test_where_every_row_is_read_the_row_update_is_adams(kind, reference, wd):
    sparse, dense = _tables()
    opt_s = kind(sparse.parameters(), lr=0.05, weight_decay=wd, fused=True)
    opt_d = reference(dense.parameters(), lr=0.05, weight_decay=wd, foreach=False)
    for step in range(5):
        ids = torch.tensor([0, 1, 2, 3, 4, 5, step % 6, 2])
        for table, opt in ((sparse, opt_s), (dense, opt_d)):
            opt.zero_grad()
            (table(ids).sin().sum() * (step + 1)).backward()
            opt.step()
    assert sparse.weight.grad is not None and sparse.weight.grad.is_sparse  # given back after the step
    torch.testing.assert_close(sparse.weight, dense.weight)
    torch.testing.assert_close(opt_s.state[sparse.weight]["exp_avg_sq"], opt_d.state[dense.weight]["exp_avg_sq"])


def test_rows_a_step_does_not_read_keep_weights_and_moments_as_sparse_adam_does():
    sparse, ref = _tables()
    ref.sparse = True
    opt_s = LazyRowsAdam(sparse.parameters(), lr=0.05)
    opt_r = torch.optim.SparseAdam(ref.parameters(), lr=0.05)
    before = sparse.weight.detach().clone()
    for ids in ([0, 1, 1], [1, 4], [4, 0, 0, 4]):
        for table, opt in ((sparse, opt_s), (ref, opt_r)):
            opt.zero_grad()
            table(torch.tensor(ids)).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(sparse.weight, ref.weight)
    untouched = [2, 3, 5]
    torch.testing.assert_close(sparse.weight[untouched], before[untouched], rtol=0, atol=0)
    assert not opt_s.state[sparse.weight]["exp_avg"][untouched].any()
    assert not torch.equal(sparse.weight[[0, 1, 4]], before[[0, 1, 4]])


@pytest.mark.parametrize("limit", [0.5, 100.0])
def test_clipping_counts_sparse_rows_as_clip_grad_norm_does_their_dense_form(limit):
    torch.manual_seed(0)
    table, lin = nn.Embedding(8, 4, sparse=True), nn.Linear(4, 2)
    (lin(table(torch.tensor([1, 3, 3, 7]))) ** 2).sum().backward()
    dense = [table.weight.grad.to_dense().clone(), lin.weight.grad.clone(), lin.bias.grad.clone()]
    params = [nn.Parameter(g.clone()) for g in dense]
    for p, g in zip(params, dense):
        p.grad = g.clone()
    want = float(nn.utils.clip_grad_norm_(params, limit))
    got = clip_grad_norm([table.weight, lin.weight, lin.bias], limit)
    assert got == pytest.approx(want, rel=1e-6)
    assert (want > limit) == (limit == 0.5)  # one case clips, the other does not
    for mine, theirs in zip([table.weight.grad.to_dense(), lin.weight.grad, lin.bias.grad], params):
        torch.testing.assert_close(mine, theirs.grad)


def test_the_trainer_updates_a_bigram_table_by_rows_and_gives_back_a_plain_model(tmp_path, monkeypatch):
    # 3 buckets: every batch reads every row, so the lazy update must equal the dense one; the
    # low clipping limit makes the sparse norm count
    def run(folder, dense):
        if dense:
            monkeypatch.setattr("rnnkit.training.trainer.sparse_tables", lambda model: [])
        torch.manual_seed(0)
        model = SequenceTagger(vocab_size=20, num_tags=3, embedding_dim=8, bigram_buckets=3, bigram_embedding_dim=4,
                               encoder={"cell": "gru", "hidden_sizes": [8], "bidirectional": True})
        cfg = TrainerConfig(epochs=2, progress=False, plots=False, out_dir=str(tmp_path / folder), num_threads=1,
                            optimizer={"name": "adam", "lr": 0.02}, clip_grad_norm=0.1)
        data = tagging_batches()
        trainer = Trainer(model, cfg, train=data[:4], dev=data[4:], metrics=TaggingMetrics(TAGS),
                          vocabs={"tags": {"itos": TAGS}})
        seen = []
        orig = trainer._backward

        def spy(loss, value):
            orig(loss, value)
            seen.append((model.bigrams.embedding.weight.grad.is_sparse, trainer._grad_norms[0]))
        trainer._backward = spy
        trainer.fit()
        monkeypatch.undo()
        return model, trainer, seen

    lazy, trainer, seen = run("lazy", dense=False)
    plain, _, seen_dense = run("dense", dense=True)
    assert len(seen) == 8 and all(sparse for sparse, _ in seen) and not any(sparse for sparse, _ in seen_dense)
    for (_, norm), (_, dense_norm) in zip(seen, seen_dense):  # the same norms, and clipped
        assert norm == pytest.approx(dense_norm, rel=1e-4) and norm > 0.1
    assert type(trainer.optimizer).__name__ == "LazyRowsAdam"
    assert lazy.bigrams.embedding.sparse is False  # a plain module again after fit
    for (name, a), b in zip(lazy.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
