"""data.format audio end to end on synthetic speech (each symbol a tone): a classifier and a CTC
Transcriber trained from a config, evaluated and used by `rnnkit predict`; config and manifest
errors named."""

import json
import subprocess
import sys

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")
pytest.importorskip("jiwer")

from rnnkit.config import ConfigError, parse_config  # noqa: E402
from rnnkit.run import evaluate, train  # noqa: E402
from rnnkit.run.predictor import Predictor  # noqa: E402

SR = 8000
TONES = {"a": 400.0, "b": 1200.0, "c": 2400.0}


def utterance(text: str, rng) -> np.ndarray:
    parts = [np.zeros(int(SR * rng.uniform(0.02, 0.05)), np.float32)]
    for ch in text:
        t = np.arange(int(SR * 0.08)) / SR
        parts += [(0.4 * np.sin(2 * np.pi * TONES[ch] * t)).astype(np.float32),
                  np.zeros(int(SR * rng.uniform(0.03, 0.06)), np.float32)]
    x = np.concatenate(parts)
    return x + 0.01 * rng.standard_normal(len(x)).astype(np.float32)


def write_manifest(folder, texts, key, seed):
    rng = np.random.default_rng(seed)
    (folder / "wav").mkdir(exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        name = f"wav/{seed}_{i}.wav"
        sf.write(folder / name, utterance(text, rng), SR)
        lines.append(json.dumps({"path": name, key: text if key == "transcript" else text[0]}))
    path = folder / f"{key}_{seed}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path, model: dict, train_file, dev_file, **data):
    return parse_config({
        "data": {"format": "audio", "train": str(train_file), "dev": str(dev_file), "sample_rate": SR,
                 "n_fft": 128, "hop_length": 80, "n_mels": 20, **data},
        "model": model,
        "trainer": {"epochs": 30, "batch_size": 8, "progress": False, "plots": False, "num_threads": 1,
                    "optimizer": {"name": "adam", "lr": 0.01}, "out_dir": str(tmp_path / "run")}})


def test_transcriber_learns_tone_strings(tmp_path):
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abc"), size=rng.integers(1, 4))) for _ in range(24)]
    train_file = write_manifest(tmp_path, texts, "transcript", seed=1)
    dev_file = write_manifest(tmp_path, texts[:8], "transcript", seed=2)  # the same strings, new noise
    cfg = config(tmp_path, {"type": "Transcriber", "options": {
        "encoder": {"cell": "lstm", "hidden_sizes": [32, 32], "bidirectional": True}, "pyramid": 1}},
        train_file, dev_file, target="transcript", time_masks=1, time_width=2)
    summary = train(cfg)
    assert summary["monitor"] == "cer"
    assert summary["dev"]["cer"] < 0.1, summary["dev"]
    again = evaluate(tmp_path / "run" / "best", dev_file)
    assert again["cer"] == pytest.approx(summary["dev"]["cer"])
    records = list(Predictor(tmp_path / "run" / "best").records([], source=str(dev_file)))
    assert len(records) == 8 and sum(r["transcript"] == r["gold"] for r in records) >= 6
    cli = subprocess.run([sys.executable, "-m", "rnnkit.cli", "predict", str(tmp_path / "run" / "best"),
                          str(dev_file)], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert [json.loads(line) for line in cli.stdout.splitlines()] == records


def test_classifier_on_audio_and_global_normalisation(tmp_path):
    texts = list("abc") * 6
    train_file = write_manifest(tmp_path, texts, "label", seed=3)
    dev_file = write_manifest(tmp_path, texts[:6], "label", seed=4)
    cfg = config(tmp_path, {"type": "SequenceClassifier", "options": {
        "encoder": {"cell": "gru", "hidden_sizes": [16], "bidirectional": True}, "pooling": "mean"}},
        train_file, dev_file, features="mfcc", n_mfcc=12, normalize="global")
    summary = train(cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"epochs": 10})}))
    assert summary["dev"]["accuracy"] == 1.0
    records = list(Predictor(tmp_path / "run" / "best").records([], source=str(dev_file)))
    assert [r["label"] for r in records] == [r["gold"] for r in records]
    # one recording, given as the file itself: the record its manifest line gets, named by the file
    first = json.loads(dev_file.read_text().splitlines()[0])
    wav = dev_file.parent / first["path"]
    alone = list(Predictor(tmp_path / "run" / "best").records([], source=str(wav)))
    assert len(alone) == 1 and alone[0]["label"] == records[0]["label"] and alone[0]["where"] == str(wav)


def test_config_and_manifest_errors(tmp_path):
    train_file = write_manifest(tmp_path, ["a", "b"], "label", seed=5)
    model = {"type": "Transcriber", "options": {}}
    with pytest.raises(ConfigError, match="a Transcriber learns from each line's transcript"):
        config(tmp_path, model, train_file, train_file)
    with pytest.raises(ConfigError, match=r"n_mfcc \(30\) must be at most n_mels \(20\)"):
        config(tmp_path, model, train_file, train_file, target="transcript", features="mfcc", n_mfcc=30)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(train_file.read_text() + json.dumps({"path": "wav/none.wav", "label": "a"}) + "\n")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(json.dumps({"data": {"format": "audio", "train": str(bad), "sample_rate": SR},
                                    "model": {"type": "SequenceClassifier", "options": {}},
                                    "trainer": {"out_dir": str(tmp_path / "r"), "progress": False}}))
    out = subprocess.run([sys.executable, "-m", "rnnkit.cli", "train", str(cfg_file)], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "bad.jsonl:3: no such audio file" in out.stderr


def test_transcriber_items_limits_and_unknown_symbols():
    from types import SimpleNamespace

    from rnnkit.data.audio import AudioExample
    from rnnkit.run.audio import symbol_vocab, transcriber_items

    ex = AudioExample(values=np.zeros((10, 3), np.float32), transcript="abba", where="m.jsonl:1")
    vocabs = {"symbols": symbol_vocab([ex])}
    assert vocabs["symbols"].itos_[0] == "<blank>"
    [item] = transcriber_items(vocabs, [ex])
    assert [vocabs["symbols"].itos_[i] for i in item["targets"]] == list("abba")
    with pytest.raises(ValueError, match=r"m.jsonl:1: 10 frames, more than data.max_length \(5\)"):
        transcriber_items(vocabs, [ex], SimpleNamespace(max_length=5, truncate=False))
    [cut] = transcriber_items(vocabs, [ex], SimpleNamespace(max_length=5, truncate=True))
    assert len(cut["inputs"]) == 5
    other = AudioExample(values=np.zeros((4, 3), np.float32), transcript="abc", where="dev.jsonl:7")
    with pytest.raises(ValueError, match="dev.jsonl:7: transcript has symbol.*'c' that no training transcript has"):
        transcriber_items(vocabs, [other])


def test_a_missing_audio_package_names_the_extra(tmp_path, monkeypatch, capsys):
    from rnnkit import cli

    train_file = write_manifest(tmp_path, ["a", "b"], "label", seed=6)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(json.dumps({"data": {"format": "audio", "train": str(train_file), "sample_rate": SR},
                                    "model": {"type": "SequenceClassifier", "options": {}},
                                    "trainer": {"out_dir": str(tmp_path / "r"), "progress": False}}))
    monkeypatch.setitem(sys.modules, "soundfile", None)  # importing it now raises ImportError
    assert cli.main(["train", str(cfg_file)]) == 2
    assert "audio input needs soundfile: pip install 'rnnkit[audio]'" in capsys.readouterr().err
