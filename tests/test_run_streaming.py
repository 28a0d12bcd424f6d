"""data.streaming from the config: the vocabulary pass, vocab.json and data.vocab, training equal
to in-memory training when the buffer holds the file, and errors that name file:line."""

import json

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.run import streaming as run_module
from rnnkit.cli import main
from rnnkit.config import ConfigError, parse_config
from rnnkit.run import VOCAB_FILE, count_vocabs, fit_vocabs, prepare, read_file, train

TRAINER = {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
           "optimizer": {"name": "adam", "lr": 0.02}}
SMALL = {"embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8]}}
WORDS = "the cat dog sat ran on a mat log".split()


def conll(tmp_path, sentences=40, name="train.conll"):
    """A CoNLL file of ``sentences`` sentences of 1..6 tokens; returns (path, line count)."""
    lines = []
    for s in range(sentences):
        for t in range(1 + (s * 7 + 3) % 6):
            w = WORDS[(s * 5 + t * 3) % len(WORDS)]
            lines.append(f"{w} {'N' if w in ('cat', 'dog', 'mat', 'log') else 'O'}")
        lines.append("")
    f = tmp_path / name
    f.write_text("\n".join(lines) + "\n")
    return f, len(lines)


def config(tmp_path, data, model_type="SequenceTagger", out="run", **trainer):
    return parse_config({"data": data, "model": {"type": model_type, "options": SMALL},
                         "trainer": {**TRAINER, "out_dir": str(tmp_path / out), **trainer}})


def weights(path):
    return ckpt.load(path).model.state_dict()


def test_the_one_pass_vocabularies_equal_the_in_memory_ones(tmp_path):
    f, _ = conll(tmp_path)
    cfg = config(tmp_path, {"format": "conll", "train": str(f), "chars": True, "min_freq": 2})
    examples = read_file(cfg.data, f)
    vocabs, n = count_vocabs(cfg, iter(examples))  # an iterator: one pass, nothing kept
    assert n == len(examples)
    from rnnkit.data import Vocab
    assert vocabs["words"] == Vocab(min_freq=2).fit(ex.tokens for ex in examples)
    assert vocabs["chars"] == Vocab(specials=("<pad>", "<unk>"), name="char").fit_chars(ex.tokens for ex in examples)
    assert vocabs["labels"].itos_ == ["N", "O"]
    assert fit_vocabs(cfg, examples).keys() == vocabs.keys()


@pytest.mark.parametrize("fmt", ["conll", "label_text"])
def test_streaming_training_equals_in_memory_training_when_the_buffer_holds_the_file(tmp_path, fmt):
    if fmt == "conll":
        f, _ = conll(tmp_path)
        kind = "SequenceTagger"
    else:
        f = tmp_path / "sst.txt"
        f.write_text("".join(f"{i % 2} {WORDS[i % 9]} {WORDS[(i * 4) % 9]} film {i % 5}\n" for i in range(30)))
        kind = "SequenceClassifier"
    data = {"format": fmt, "train": str(f), "dev": str(f)}
    memory = train(config(tmp_path, data, kind, out="memory"))
    streamed = train(config(tmp_path, {**data, "streaming": True, "shuffle_buffer": 1000}, kind, out="streamed"))
    assert streamed["dev"] == memory["dev"] and streamed["best_epoch"] == memory["best_epoch"]
    a, b = weights(tmp_path / "memory" / "last"), weights(tmp_path / "streamed" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same batches in the same order, so the same steps


def test_a_small_buffer_trains_on_every_example_each_epoch(tmp_path):
    f, _ = conll(tmp_path, sentences=50)
    cfg = config(tmp_path, {"format": "conll", "train": str(f), "streaming": True, "shuffle_buffer": 8,
                            "num_workers": 2})
    p = prepare(cfg)
    words = p.vocabs["words"]
    expected = sorted(tuple(ex.tokens) for ex in read_file(cfg.data, f))
    for epoch in (1, 2):
        p.train.set_epoch(epoch)
        batches = list(p.train)
        assert len(batches) == len(p.train)
        got = sorted(tuple(words.decode(row[:n].tolist())) for b in batches
                     for row, n in zip(b["inputs"], b["lengths"]))
        assert got == expected


def test_a_malformed_line_deep_in_the_file_is_named_by_the_vocabulary_pass(tmp_path):
    f, lines = conll(tmp_path, sentences=3000)
    with open(f, "a") as out:
        out.write("cat N extra\n")
    cfg = config(tmp_path, {"format": "conll", "train": str(f), "streaming": True})
    with pytest.raises(ValueError, match=rf"^{f}:{lines + 1}: expected 2 space-separated columns, got 3"):
        train(cfg)


def test_with_a_saved_vocabulary_a_malformed_line_is_named_by_the_training_pass(tmp_path, monkeypatch):
    f, lines = conll(tmp_path, sentences=300)
    data = {"format": "conll", "train": str(f), "streaming": True, "shuffle_buffer": 16}
    train(config(tmp_path, data, epochs=1, out="first"))
    saved = json.loads((tmp_path / "first" / VOCAB_FILE).read_text())
    assert saved["train"]["examples"] == 300 and set(saved["vocabs"]) == {"words", "labels"}
    # same size, one line broken near the end: the file's count is trusted, so no pass reads it first
    text = f.read_text().splitlines(keepends=True)
    n = len(text) - 3
    assert text[n - 1].count(" ") == 1
    text[n - 1] = text[n - 1].replace(" ", "_")
    f.write_text("".join(text))
    monkeypatch.setattr(run_module, "count_vocabs", lambda *a: pytest.fail("counted again"))
    cfg = config(tmp_path, {**data, "vocab": str(tmp_path / "first" / VOCAB_FILE)}, out="second")
    with pytest.raises(ValueError, match=rf"^{f}:{n}: expected 2 space-separated columns, got 1"):
        train(cfg)


def test_a_saved_vocabulary_is_used_as_it_is(tmp_path):
    f, _ = conll(tmp_path)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"vocabs": {
        "words": {"itos": ["<pad>", "<unk>", "<bos>", "<eos>", "cat"], "specials": ["<pad>", "<unk>", "<bos>", "<eos>"],
                  "unk": "<unk>"},
        "labels": {"itos": ["N", "O"], "specials": [], "unk": None, "name": "tag"}}}))
    for streaming in (False, True):
        p = prepare(config(tmp_path, {"format": "conll", "train": str(f), "vocab": str(vocab),
                                      "streaming": streaming}))
        assert p.vocabs["words"].itos_[4:] == ["cat"] and p.counts["train"] == 40  # counted: no "train" record


def test_a_saved_vocabulary_without_a_label_of_the_file_names_the_line(tmp_path):
    f, _ = conll(tmp_path)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"vocabs": {
        "words": {"itos": ["<pad>", "<unk>", "<bos>", "<eos>"], "specials": ["<pad>", "<unk>", "<bos>", "<eos>"],
                  "unk": "<unk>"},
        "labels": {"itos": ["B", "O"], "specials": [], "unk": None, "name": "tag"}}}))
    cfg = config(tmp_path, {"format": "conll", "train": str(f), "vocab": str(vocab), "streaming": True})
    with pytest.raises(ValueError, match=rf"^{f}:\d+: unknown tag 'N'"):
        train(cfg)


@pytest.mark.parametrize("content, message", [
    (None, "no such vocabulary file"),
    ("{\n  oops", r":2: not valid JSON"),
    ('{"words": {}}', 'expected a JSON object with "vocabs"'),
    ('{"vocabs": {"words": {"itos": ["<pad>"], "specials": ["<pad>"], "unk": null}}}',
     "has no labels vocabulary; a SequenceTagger on conll needs words, labels"),
])
def test_a_bad_vocabulary_file_is_one_clear_error(tmp_path, content, message):
    f, _ = conll(tmp_path)
    vocab = tmp_path / "v.json"
    if content is not None:
        vocab.write_text(content)
    with pytest.raises(ValueError, match=message):
        prepare(config(tmp_path, {"format": "conll", "train": str(f), "vocab": str(vocab), "streaming": True}))


@pytest.mark.parametrize("data, message", [
    ({"format": "ts", "streaming": True}, "streaming reads conllu, .* lazily; data.format .ts. is read whole"),
    ({"format": "lm_text", "streaming": True, "num_workers": 1}, r"read in order .* num_workers \(1\) must be 0"),
    ({"format": "conll", "streaming": True, "dev_fraction": 0.1}, "cannot carve dev_fraction"),
    ({"format": "conll", "shuffle_buffer": 100}, r"shuffle_buffer \(100\) only apply with streaming: true"),
    ({"format": "conll", "num_workers": 2}, r"num_workers \(2\) only apply with streaming: true"),
])
def test_streaming_options_that_cannot_apply_are_refused(tmp_path, data, message):
    kind = {"ts": "SequenceClassifier", "lm_text": "LanguageModel"}.get(data["format"], "SequenceTagger")
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, {"train": "x", **data}, kind)


def test_the_cli_trains_streaming_and_reports_a_bad_line_in_one_line(tmp_path, capsys):
    f, lines = conll(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{format: conll, train: {f}, streaming: true, shuffle_buffer: 16}}\n"
                   f"model: {{type: SequenceTagger, options: {{embedding_dim: 8, encoder: {{hidden_sizes: [8]}}}}}}\n"
                   f"trainer: {{epochs: 1, batch_size: 4, progress: false, plots: false, num_threads: 1, "
                   f"out_dir: {tmp_path / 'run'}}}\n")
    assert main(["train", str(cfg)]) == 0
    assert "40 train (streamed)" in capsys.readouterr().err
    with open(f, "a") as out:
        out.write("dog\n")
    assert main(["train", str(cfg), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rnnkit train: error: ") and f"{f}:{lines + 1}: expected 2" in err[-1]


# ------------------------------------------------------------------------------ lm_text

def lm_file(tmp_path, lines=120):
    f = tmp_path / "lm.txt"
    f.write_text("".join(("\n" if i % 17 == 5 else " ".join(WORDS[(i * 3 + t) % 9] for t in range(1 + i % 5)) + "\n")
                         for i in range(lines)))
    return f


@pytest.mark.parametrize("world, cap", [(1, None), (2, None), (3, 200)])
def test_a_streamed_lm_gives_the_in_memory_lm_windows(tmp_path, monkeypatch, world, cap):
    monkeypatch.setattr(run_module, "LM_INDEX_LINES", 7)  # many index lines: rows seek midway
    f = lm_file(tmp_path)
    data = {"format": "lm_text", "train": str(f), "bptt": 4, "max_train_examples": cap}
    for rank in range(world):
        memory = prepare(config(tmp_path, data, "LanguageModel", batch_size=5), rank=rank, world=world)
        streamed = prepare(config(tmp_path, {**data, "streaming": True}, "LanguageModel", batch_size=5),
                           rank=rank, world=world)
        assert streamed.vocabs["words"] == memory.vocabs["words"]
        a, b = list(memory.train), list(streamed.train)
        assert len(b) == len(streamed.train) == len(memory.train) == len(a) > 3
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_streamed_lm_training_equals_in_memory_training(tmp_path):
    f = lm_file(tmp_path)
    data = {"format": "lm_text", "train": str(f), "dev": str(f), "bptt": 5}
    memory = train(config(tmp_path, data, "LanguageModel", out="memory"))
    streamed = train(config(tmp_path, {**data, "streaming": True}, "LanguageModel", out="streamed"))
    assert streamed["dev"] == memory["dev"]


def test_a_streamed_lm_file_that_lost_tokens_is_an_error(tmp_path):
    f = lm_file(tmp_path)
    p = prepare(config(tmp_path, {"format": "lm_text", "train": str(f), "bptt": 4, "streaming": True},
                       "LanguageModel", batch_size=5))
    f.write_text(f.read_text()[: len(f.read_text()) // 2])
    with pytest.raises(ValueError, match="ended before token .* it changed since its tokens were counted"):
        list(p.train)
