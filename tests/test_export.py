"""Export: every head to ONNX (and .pt2), equal to the eager model on padded and unpadded
batches; the graph path of the recurrence equal to the eager paths; refusals; the CLI's
export and ``predict --backend onnxruntime``."""

import json

import pytest
import torch

from rnnkit import Stack
from rnnkit.export import ExportError, OnnxRunner, export, graph_module
from rnnkit.models import Forecaster, LanguageModel, Seq2Seq, SequenceClassifier, SequenceTagger

from tiny_runs import train_teddy_tagger  # tests/tiny_runs.py

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

BI_GRU = {"cell": "gru", "hidden_sizes": [12, 12], "bidirectional": True}
BI_LSTM = {"cell": "lstm", "hidden_sizes": [12], "bidirectional": True}
HEADS = {
    "tagger-bigru-softmax": lambda: SequenceTagger(vocab_size=30, num_tags=5, encoder=BI_GRU),
    "tagger-gru-uni": lambda: SequenceTagger(vocab_size=30, num_tags=4, encoder={"cell": "gru", "hidden_sizes": [12]}),
    "tagger-bilstm-crf-chars": lambda: SequenceTagger(
        vocab_size=30, num_tags=5, output="crf", char_vocab_size=20, char_hidden_size=6, encoder=BI_LSTM),
    "tagger-bilstm-crf-bigrams": lambda: SequenceTagger(
        vocab_size=30, num_tags=5, output="crf", bigram_buckets=37, bigram_embedding_dim=4, encoder=BI_LSTM),
    "classifier-bilstm-last": lambda: SequenceClassifier(num_classes=3, vocab_size=30, encoder=BI_LSTM),
    "classifier-bigru-bigrams-attention": lambda: SequenceClassifier(
        num_classes=2, vocab_size=30, pooling="attention", bigram_buckets=37, bigram_embedding_dim=4, encoder=BI_GRU),
    "classifier-values-layernorm-attention": lambda: SequenceClassifier(
        num_classes=3, input_size=4, pooling="attention",
        encoder={"cell": "gru", "hidden_sizes": [12, 12], "layer_norm": True, "residual": True,
                 "cell_layer_norm": True}),
    "language-model-lstm": lambda: LanguageModel(vocab_size=30, eos_id=3, encoder={"cell": "lstm", "hidden_sizes": [12, 12]}),
    "language-model-adaptive-softmax": lambda: LanguageModel(vocab_size=30, eos_id=3, adaptive_cutoffs=[8, 20],
                                                             adaptive_div=2.0, encoder={"cell": "gru", "hidden_sizes": [12]}),
    "language-model-tied-adaptive-softmax": lambda: LanguageModel(
        vocab_size=30, eos_id=3, adaptive_cutoffs=[8, 20], tie_weights=True, embedding_dim=10,
        encoder={"cell": "lstm", "hidden_sizes": [12]}),
    "seq2seq-bigru-attention": lambda: Seq2Seq(source_vocab_size=30, target_vocab_size=25, context="attention",
                                               encoder={"cell": "gru", "hidden_sizes": [12], "bidirectional": True}),
    "seq2seq-lstm-init": lambda: Seq2Seq(source_vocab_size=30, target_vocab_size=25, context="init",
                                         encoder={"cell": "lstm", "hidden_sizes": [12]}, max_target_length=8),
    "forecaster-autoregressive": lambda: Forecaster(
        input_size=2, horizon=3, mode="autoregressive", encoder={"cell": "gru", "hidden_sizes": [12]}),
}


def build(name):
    torch.manual_seed(0)
    model = HEADS[name]()
    if isinstance(model, Forecaster):
        model.fit_scaler(torch.randn(40, 2) * 3 + 1)
    # an untrained CRF or softmax gives near-ties; sharper weights make decoded labels a real test
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


def padded_and_alone(model, interface):
    """A padded batch and each of its rows alone, unpadded."""
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([7, 2, 5, 1])
    batch = {"lengths": lengths}
    for spec in interface["inputs"]:
        if spec["name"] == "lengths":
            continue
        if spec["dtype"] == "float32":
            x = torch.randn(4, 7, spec["shape"][2], generator=g)
        elif spec["name"] == "chars":
            x = torch.randint(1, model.chars.embedding.num_embeddings, (4, 7, 3), generator=g)
        else:
            V = model.source_embedding.num_embeddings if isinstance(model, Seq2Seq) else model.input.vocab_size
            x = torch.randint(1, V, (4, 7), generator=g)
        # filler past each length: any value must be ignored
        batch[spec["name"]] = x
    alone = [{k: (v[i:i + 1, :n] if k != "lengths" else v[i:i + 1]) for k, v in batch.items()}
             for i, n in enumerate(lengths.tolist())]
    return batch, alone


@pytest.mark.parametrize("name", HEADS)
def test_onnx_export_equals_the_model_padded_or_not(tmp_path, name):
    model = build(name)
    path = tmp_path / f"{name}.onnx"
    report = export(model, path, format="onnx")
    assert report["ok"] and report["labels_equal"] and report["max_abs_diff"] <= 1e-4
    assert report["sequences"] >= 9  # the generated batches: batch 5, batch 1, T = 1

    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model_type"] == type(model).__name__ and meta["check"]["ok"]
    session = onnxruntime.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == [s["name"] for s in meta["inputs"]]
    assert [o.name for o in session.get_outputs()] == [s["name"] for s in meta["outputs"]]

    _, interface = graph_module(model)
    batch, alone = padded_and_alone(model, interface)

    def run(b):
        return session.run(None, {s["name"]: b[s["name"]].numpy() for s in meta["inputs"]})

    together = run(batch)
    for i, single in enumerate(alone):
        one = run(single)
        n = int(single["lengths"][0])
        for out, spec in zip(zip(together, one), meta["outputs"]):
            a, b = (torch.from_numpy(o) for o in out)
            a = a[i:i + 1]
            if spec["shape"][:2] == ["batch", "time"]:
                a = a[:, :n]
            assert a.shape == b.shape, spec["name"]
            if a.is_floating_point():
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=spec["name"])
            else:
                assert torch.equal(a, b), spec["name"]


@pytest.mark.parametrize("name", ["tagger-bilstm-crf-chars", "seq2seq-lstm-init"])
def test_pt2_export_loads_back_and_equals_the_model(tmp_path, name):
    model = build(name)
    path = tmp_path / f"{name}.pt2"
    assert export(model, path, format="pt2")["ok"]
    program = torch.export.load(str(path))
    _, interface = graph_module(model)
    batch, _ = padded_and_alone(model, interface)
    out = program.module()(*(batch[s["name"]] for s in interface["inputs"]))
    if isinstance(model, SequenceTagger):
        tags = out[1].tolist()
        assert [row[:n] for row, n in zip(tags, batch["lengths"].tolist())] == model.predict(batch)
    else:
        rows = [row[:row.index(model.eos_id)] if model.eos_id in row else row for row in out[0].tolist()]
        assert rows == model.predict(batch, beam_size=1)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_the_graph_path_gives_what_the_eager_paths_give(cell):
    """Stack under torch.export (the scan path) vs eager (compiled/fused/loop): outputs at real
    steps and every layer's final state -- the LSTM's c included, at each row's own end."""
    torch.manual_seed(1)
    stack = Stack(5, [8, 8], cell=cell, bidirectional=[True, False], residual=True).eval()

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = stack

        def forward(self, x, lengths):
            out, states = self.stack(x, lengths=lengths)
            leaves = torch.utils._pytree.tree_leaves(states)
            return (out, *leaves)

    B, T = torch.export.Dim("B", min=1, max=64), torch.export.Dim("T", min=1, max=512)
    example = (torch.randn(2, 3, 5), torch.tensor([3, 2]))
    with torch.no_grad():
        program = torch.export.export(Flat(), example, dynamic_shapes=({0: B, 1: T}, {0: B}))
        x, lengths = torch.randn(4, 9, 5), torch.tensor([9, 1, 4, 6])
        got = program.module()(x, lengths)
        want = Flat()(x, lengths)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert any(node.target is torch.ops.higher_order.scan for node in program.graph.nodes)


def test_refusals_name_what_is_wrong(tmp_path):
    model = build("tagger-gru-uni")
    with pytest.raises(ExportError, match="format must be one of onnx, pt2; got 'torchscript'.*pt2 is its successor"):
        export(model, tmp_path / "m.pt", format="torchscript")
    with pytest.raises(ExportError, match="cannot export a Linear"):
        export(torch.nn.Linear(2, 2), tmp_path / "l.onnx")
    with pytest.raises(ExportError, match="is a folder"):
        export(model, tmp_path, format="onnx")


def test_an_export_that_differs_from_its_model_is_not_kept(tmp_path, monkeypatch):
    import rnnkit.export as ex

    monkeypatch.setattr(ex, "TOLERANCE", -1.0)  # no difference can pass
    path = tmp_path / "m.pt2"
    with pytest.raises(ExportError, match="differs from the model: max abs difference"):
        export(build("tagger-gru-uni"), path, format="pt2")
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_cli_export_then_predict_through_onnxruntime(tmp_path, capsys):
    from rnnkit.cli import main

    train_teddy_tagger(tmp_path, data={"test": str(tmp_path / "ner.conll"), "chars": True}, options={
        "embedding_dim": 8, "output": "crf", "encoder": {"cell": "gru", "hidden_sizes": [8], "bidirectional": True}})
    ckpt = tmp_path / "run" / "best"
    assert main(["export", str(ckpt)]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ok"] and report["file"] == str(tmp_path / "run" / "best.onnx")
    assert "16 sequences of" in report["held_out"] and "decoded labels identical" in out.err
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta["labels"] and set(meta["vocabs"]) == {"words", "labels", "chars"} and meta["tokenizer"]

    text = tmp_path / "in.txt"
    text.write_text("Teddy Roosevelt was president\nTeddy bears are on sale\nunknown words here\n")
    assert main(["predict", str(ckpt), str(text)]) == 0
    eager = capsys.readouterr().out
    assert main(["predict", str(ckpt), str(text), "--backend", "onnxruntime"]) == 0
    assert capsys.readouterr().out == eager

    # an ONNX file of other weights is refused, not silently run
    other = tmp_path / "other.onnx"
    export(build("tagger-gru-uni"), other)
    runner_error = "was exported from other weights"
    with pytest.raises(ExportError, match=runner_error):
        from rnnkit.checkpoint import load
        OnnxRunner(load(ckpt), other)
    assert main(["predict", str(tmp_path / "run" / "last"), str(text), "--backend", "onnxruntime"]) == 2
    assert "rnnkit export" in capsys.readouterr().err
