"""Checkpoints: safetensors + JSON, no pickle; clear errors for truncated, corrupted, other-type files."""

import json
import pickle

import numpy as np
import pytest
import torch

from rnnkit import checkpoint
from rnnkit.checkpoint import CheckpointError
from rnnkit.models import SequenceClassifier, SequenceTagger


def tagger():
    torch.manual_seed(0)
    return SequenceTagger(vocab_size=30, num_tags=4, embedding_dim=8, output="crf",
                          encoder={"cell": "lstm", "hidden_sizes": [6, 6], "bidirectional": True})


def batch():
    return {"inputs": torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), "lengths": torch.tensor([4, 2])}


@pytest.fixture
def saved(tmp_path):
    model = tagger()
    path = checkpoint.save(tmp_path / "ck", model, vocabs={"words": {"itos": ["<pad>", "<unk>", "a"]}},
                           extra={"note": "x"})
    return model, path


def test_save_load_round_trip_without_pickle(saved, monkeypatch):
    model, path = saved
    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle anything")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = checkpoint.load(path, expected_type=SequenceTagger)
    assert type(loaded.model) is SequenceTagger and not loaded.model.training
    assert loaded.model.config == model.config
    assert loaded.vocabs["words"]["itos"][2] == "a" and loaded.extra == {"note": "x"}
    model.eval()
    assert loaded.model.predict(batch()) == model.predict(batch())
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "model.safetensors"]


def test_checkpoint_of_another_model_type(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match=r"holds a SequenceTagger model; expected SequenceClassifier"):
        checkpoint.load(path, expected_type=SequenceClassifier)


def test_unknown_model_type_is_not_imported(saved):
    _, path = saved
    manifest = json.loads((path / "checkpoint.json").read_text())
    manifest["model_type"] = "os.system"
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"model_type 'os.system' is not a known model; known: .*SequenceTagger"):
        checkpoint.load(path)


def test_truncated_weights(saved):
    _, path = saved
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"model.safetensors: truncated or overwritten: {len(data) // 2} bytes"):
        checkpoint.load(path)


def test_corrupted_weights_same_size(saved):
    _, path = saved
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupted"):
        checkpoint.load(path)


def test_truncated_manifest_names_file_and_line(saved):
    _, path = saved
    text = (path / "checkpoint.json").read_text()
    (path / "checkpoint.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint.json:\d+: not valid JSON"):
        checkpoint.load(path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        checkpoint.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint.json: missing"):
        checkpoint.load(tmp_path / "empty")


def test_weights_that_do_not_fit_the_config(saved):
    _, path = saved
    manifest = json.loads((path / "checkpoint.json").read_text())
    manifest["model_config"]["embedding_dim"] = 9
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="weights do not match a SequenceTagger"):
        checkpoint.load(path)


def test_saving_again_replaces_the_checkpoint(saved):
    model, path = saved
    with torch.no_grad():
        model.emissions.bias.add_(1.0)
    checkpoint.save(path, model)
    loaded = checkpoint.load(path)
    assert torch.equal(loaded.model.emissions.bias, model.emissions.bias)
    assert not list(path.parent.glob(".ck*")) and not (path.parent / "ck.old").exists()


def test_state_codec_round_trip():
    state = {"t": torch.arange(3.0), 0: {"step": torch.tensor(2.0), "buf": None},
             "tuple": (3, "MT", np.arange(4, dtype=np.uint32), 1.5), "list": [1, {"x": torch.ones(2)}]}
    tensors = {}
    encoded = checkpoint.encode_state(state, tensors)
    json.dumps(encoded)
    back = checkpoint.decode_state(json.loads(json.dumps(encoded)), tensors)
    assert torch.equal(back["t"], state["t"]) and torch.equal(back[0]["step"], state[0]["step"])
    assert back[0]["buf"] is None and back["tuple"][:2] == (3, "MT") and back["tuple"][3] == 1.5
    assert back["tuple"][2].dtype == np.uint32 and (back["tuple"][2] == np.arange(4)).all()
    assert torch.equal(back["list"][1]["x"], torch.ones(2))


def test_state_codec_refuses_objects():
    with pytest.raises(TypeError, match=r"cannot store object at 's.f'"):
        checkpoint.encode_state({"f": object()}, {})
