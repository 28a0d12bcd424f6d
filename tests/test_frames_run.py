"""Numeric frames from a config: data.format frames (a JSONL manifest of .npy/.npz/.safetensors
files), its manifest:line errors, and train -> evaluate -> predict for the tagger (softmax and
sigmoid), the classifier and seq2seq."""

import json

import numpy as np
import pytest

from rnnkit.config import ConfigError, parse_config
from rnnkit.data import read_frames_manifest
from rnnkit.run import evaluate, predict, train

D = 4
TRAINER = {"epochs": 6, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
           "optimizer": {"name": "adam", "lr": 0.02}}


def write_set(folder, n=16, seed=0, *, kind="labels"):
    """Frames whose first feature says the label: frame "on" where x0 > 0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        x = rng.normal(size=(int(rng.integers(3, 9)), D)).astype(np.float32)
        on = x[:, 0] > 0
        name = f"u{i}.npz" if i % 3 == 0 else f"u{i}.npy"
        (np.savez(folder / name, feats=x) if name.endswith(".npz") else np.save(folder / name, x))
        record = {"path": name}
        if kind == "labels":
            record["labels"] = ["on" if o else "off" for o in on]
        elif kind == "sets":
            record["labels"] = [["a"] + (["b"] if o else []) if o or x[t, 1] > 0 else [] for t, o in enumerate(on)]
        elif kind == "label":
            record["label"] = "pos" if x[:, 0].mean() > 0 else "neg"
        else:
            record["transcript"] = "ab" if x[0, 0] > 0 else "ba"
        lines.append(json.dumps(record))
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "m.jsonl"


def config(tmp_path, manifest, model, **data):
    return parse_config({"data": {"format": "frames", "train": str(manifest), "dev": str(manifest), **data},
                         "model": model, "trainer": {**TRAINER, "out_dir": str(tmp_path / "run")}})


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_tagger_train_evaluate_predict(tmp_path, output):
    manifest = write_set(tmp_path / "d", kind="labels" if output == "softmax" else "sets")
    cfg = config(tmp_path, manifest, {"type": "SequenceTagger", "options": {
        "output": output, "encoder": {"cell": "gru", "hidden_sizes": [8], "bidirectional": True}}}, scale=True)
    summary = train(cfg)
    first = "accuracy" if output == "softmax" else "micro_f1"
    assert summary["monitor"] == first
    scores = evaluate(tmp_path / "run" / "best", manifest)
    assert scores[first] > 0.8  # the labels are read off the frame's own features
    records = list(predict(tmp_path / "run" / "best", manifest.read_text().splitlines(), source=str(manifest)))
    assert len(records) == 16 and all(len(r["labels"]) == len(r["gold"]) for r in records)
    if output == "sigmoid":
        assert all(isinstance(f, list) for r in records for f in r["labels"])
    # a plain list of paths, relative to the list's folder
    paths = [json.loads(line)["path"] for line in manifest.read_text().splitlines()]
    plain = list(predict(tmp_path / "run" / "best", paths, source=str(manifest)))
    assert [r["labels"] for r in plain] == [r["labels"] for r in records]


def test_classifier_and_seq2seq(tmp_path):
    manifest = write_set(tmp_path / "c", kind="label")
    cfg = config(tmp_path / "c", manifest, {"type": "SequenceClassifier", "options": {
        "encoder": {"cell": "gru", "hidden_sizes": [8]}}})
    assert "accuracy" in train(cfg)["dev"]
    manifest = write_set(tmp_path / "s", kind="transcript")
    cfg = config(tmp_path / "s", manifest, {"type": "Seq2Seq", "options": {
        "embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8]}, "max_target_length": 4}})
    assert "bleu" in train(cfg)["dev"]
    records = list(predict(tmp_path / "s" / "run" / "best", ['{"path": "u1.npy"}'], source=str(manifest)))
    assert set(records[0]) == {"where", "path", "transcript"}


def write(folder, lines, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in arrays.items():
        np.save(folder / name, x)
    (folder / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return folder / "m.jsonl"


def test_manifest_errors_name_manifest_line(tmp_path):
    good = np.zeros((3, D), np.float32)
    nan = good.copy()
    nan[1, 2] = np.nan
    cases = [
        ([{"path": "a.npy", "labels": ["x"] * 3}, {"path": "missing.npy", "labels": ["x"]}], {"a.npy": good},
         r"m\.jsonl:2: .*missing\.npy: no such file"),
        ([{"path": "a.npy", "labels": ["x"] * 3}, {"path": "b.npy", "labels": ["x"] * 3}],
         {"a.npy": good, "b.npy": np.zeros((3, D + 1), np.float32)}, r"m\.jsonl:2: b\.npy: frames have D = 5 features; expected D = 4"),
        ([{"path": "a.npy", "labels": ["x"] * 3}], {"a.npy": np.zeros(3, np.float32)},
         r"m\.jsonl:1: a\.npy: frames must have shape \(T, D\)"),
        ([{"path": "a.npy", "labels": ["x"] * 3}], {"a.npy": nan}, r"m\.jsonl:1: a\.npy: 1 value\(s\) are NaN or inf.*frame 1, feature 2"),
        ([{"path": "a.npy", "labels": ["x"] * 2}], {"a.npy": good}, r"m\.jsonl:1: \"labels\" has 2 entries but the file has 3 frames"),
        ([{"path": "a.npy", "label": "x"}], {"a.npy": good}, r"m\.jsonl:1: has no \"labels\""),
    ]
    for i, (lines, arrays, message) in enumerate(cases):
        manifest = write(tmp_path / str(i), lines, arrays)
        with pytest.raises(ValueError, match=message):
            read_frames_manifest(manifest, target="labels")


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="model.type LanguageModel cannot learn from data.format 'frames'"):
        parse_config({"data": {"format": "frames", "train": "m.jsonl"}, "model": {"type": "LanguageModel"}})
    with pytest.raises(ConfigError, match="options.input_size is set by rnnkit from the data"):
        parse_config({"data": {"format": "frames", "train": "m.jsonl"},
                      "model": {"type": "SequenceTagger", "options": {"input_size": 3}}})
    with pytest.raises(ConfigError, match="frames have none"):
        parse_config({"data": {"format": "frames", "train": "m.jsonl", "unk_replace": 0.5},
                      "model": {"type": "SequenceTagger"}})
    # one label per frame for softmax: a set is refused at its line
    manifest = write_set(tmp_path / "d", kind="sets")
    cfg = config(tmp_path, manifest, {"type": "SequenceTagger", "options": {"output": "softmax"}})
    with pytest.raises(ValueError, match=r"m\.jsonl:\d+: labels\[\d+\] is a list of labels"):
        train(cfg)


def test_frame_metrics_multi_label_against_counts():
    import torch

    from rnnkit.training.metrics import FrameMetrics

    class Fixed:  # predicts the given sets
        def predict(self, batch):
            return [[[0], [], [0], [0]]]

    m = FrameMetrics(["speech"], multi_label=True)
    m.update(Fixed(), {"lengths": torch.tensor([4]), "labels": torch.tensor([[[1.0], [1.0], [0.0], [1.0]]])})
    tp, fp, fn = 2, 1, 1
    out = m.compute()
    assert abs(out["micro_f1"] - 2 * tp / (2 * tp + fp + fn)) < 1e-9 and out["accuracy"] == 0.5
    assert out["f1/speech"] == out["micro_f1"]
