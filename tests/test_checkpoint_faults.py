"""Checkpoints under faults (issue #18): saves killed at any step, stale temporary folders,
fsync before the swap, configs edited to describe other weights, malformed manifests."""

import hashlib
import json
import os
import shutil
import sys
import warnings

import pytest
import torch
from torch import nn

from rnnkit import checkpoint
from rnnkit.checkpoint import CheckpointError
from rnnkit.models import SequenceTagger


def tagger(**options):
    torch.manual_seed(0)
    kwargs = dict(vocab_size=30, num_tags=4, embedding_dim=8, output="crf",
                  encoder={"cell": "lstm", "hidden_sizes": [6, 6], "bidirectional": True})
    return SequenceTagger(**{**kwargs, **options})


def edit_manifest(path, edit):
    manifest = json.loads((path / "checkpoint.json").read_text())
    edit(manifest)
    (path / "checkpoint.json").write_text(json.dumps(manifest))


def rewrite_weights(path, edit):
    """Replace model.safetensors by ``edit(tensors)`` and record its new size and hash, so only
    the content differs from a checkpoint rnnkit wrote."""
    from safetensors.torch import load_file, save_file

    weights = path / "model.safetensors"
    tensors = edit(load_file(weights))
    save_file(tensors, weights)
    entry = {"bytes": weights.stat().st_size, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    edit_manifest(path, lambda m: m["files"].__setitem__("model.safetensors", entry))


def bias_of(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return checkpoint.load(path).model.emissions.bias.detach().clone()


# ------------------------------------------------------------------ killed saves

class Killed(BaseException):
    """A SIGKILL, simulated: raised at step k and by every file operation after it."""


def kill_at(monkeypatch, k):
    """Make the k-th os.replace / shutil.rmtree / os.fsync call (0-based) and all later ones
    raise Killed; returns the list of calls made. k=None never kills (counts the steps)."""
    calls = []
    for module, name in ((os, "replace"), (shutil, "rmtree"), (os, "fsync")):
        real = getattr(module, name)

        def step(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            if k is not None and len(calls) > k:
                raise Killed(f"killed at step {k} ({_name})")
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, step)
    return calls


def start(tmp_path, state):
    """A checkpoint folder ``ck`` holding v1, in the state an earlier save may have left it:
    'last' (complete), 'old' (killed between its renames: only ck.old) or 'both' (killed while
    removing ck.old: a partial ck.old beside ck)."""
    v1 = tagger()
    with torch.no_grad():
        v1.emissions.bias.fill_(1.0)
    ck = checkpoint.save(tmp_path / "ck", v1)
    if state == "old":
        os.replace(ck, tmp_path / "ck.old")
    elif state == "both":
        shutil.copytree(ck, tmp_path / "ck.old")
        (tmp_path / "ck.old" / "model.safetensors").unlink()
    return ck


@pytest.mark.parametrize("state", ["last", "old", "both"])
def test_a_save_killed_at_any_step_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, state):
    v2 = tagger()
    with torch.no_grad():
        v2.emissions.bias.fill_(2.0)
    ck = start(tmp_path / "count", state)
    with monkeypatch.context() as m:
        calls = kill_at(m, None)
        checkpoint.save(ck, v2)
    steps = len(calls)
    assert steps >= 6  # fsyncs, two renames, removals: the loop below kills at each of them
    fell_back = False
    for k in range(steps):
        ck = start(tmp_path / f"k{k}", state)
        with monkeypatch.context() as m:
            kill_at(m, k)
            with pytest.raises(Killed):
                checkpoint.save(ck, v2)
        assert checkpoint.exists(ck), f"killed at step {k} ({calls[k]}): no checkpoint left"
        fell_back |= not ck.exists()
        bias = bias_of(ck)
        assert torch.all(bias == 1.0) or torch.all(bias == 2.0), f"killed at step {k}: mixed weights"
        # The next save recovers: the new checkpoint in place, nothing left over.
        checkpoint.save(ck, v2)
        assert torch.all(bias_of(ck) == 2.0)
        assert sorted(p.name for p in ck.parent.iterdir()) == ["ck"], f"killed at step {k}"
    # The window where only ck.old exists was among the steps killed at.
    assert fell_back


def test_load_falls_back_to_old_with_a_warning_naming_both(tmp_path):
    model = tagger()
    ck = checkpoint.save(tmp_path / "last", model, trainer_state={"epoch": 3, "t": torch.arange(2.0)})
    os.replace(ck, tmp_path / "last.old")
    assert checkpoint.exists(ck) and not checkpoint.exists(tmp_path / "other")
    both = rf"{tmp_path / 'last'}: missing; loading {tmp_path / 'last.old'} instead"
    with pytest.warns(RuntimeWarning, match=both):
        assert checkpoint.read_manifest(ck)["model_type"] == "SequenceTagger"
    with pytest.warns(RuntimeWarning, match=both):
        assert checkpoint.load_state(ck)["epoch"] == 3
    with pytest.warns(RuntimeWarning, match=both) as record:
        loaded = checkpoint.load(ck)
    assert len(record) == 1 and loaded.path == tmp_path / "last.old"
    assert torch.equal(loaded.model.emissions.bias, model.emissions.bias)


def test_stale_temporary_folders_of_killed_saves_are_removed(tmp_path):
    for name in (".ck.abcd_123", ".ck.keep", ".best.abcd_123", "ck.abcd_123"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / ".ck.file_123").write_text("not a folder")
    checkpoint.save(tmp_path / "ck", tagger())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".best.abcd_123", ".ck.file_123", ".ck.keep", "ck", "ck.abcd_123"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="maps fds to paths through /proc")
def test_files_and_folder_are_fsynced_before_the_swap(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))),
                                                     real_replace(a, b))[1])
    checkpoint.save(tmp_path / "ck", tagger(), trainer_state={"epoch": 1})
    swap = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(tmp_path / "ck"))
    tmp = events[swap][1]
    synced_before = {e[1] for e in events[:swap] if e[0] == "fsync"}
    names = ["checkpoint.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors"]
    assert {f"{tmp}/{n}" for n in names} | {tmp} <= synced_before
    assert ("fsync", str(tmp_path)) in events[swap:]  # the rename itself made durable


# ------------------------------------------------- configs that describe other weights

@pytest.fixture
def builds(monkeypatch):
    """The device type of every SequenceTagger construction."""
    devices = []
    real = SequenceTagger.__init__

    def init(self, *args, **kwargs):
        devices.append(torch.empty(()).device.type)
        real(self, *args, **kwargs)
    monkeypatch.setattr(SequenceTagger, "__init__", init)
    return devices


def test_a_wrong_size_is_found_on_meta_before_the_real_build(tmp_path, builds):
    ck = checkpoint.save(tmp_path / "ck", tagger())
    edit_manifest(ck, lambda m: m["model_config"]["encoder"].__setitem__("hidden_sizes", [7, 6]))
    builds.clear()
    with pytest.raises(CheckpointError, match=r"model.safetensors: weights do not match a SequenceTagger built "
                       r"from model_config: tensor 'encoder\.layers\.0\.\S+': model_config gives shape "
                       r"\(28, \d+\) float32, the file holds \(24, \d+\) float32"):
        checkpoint.load(ck)
    assert builds == ["meta"]


@pytest.mark.parametrize("sizes, message", [
    ([8000, 8000], r"model_config\.encoder\.hidden_sizes\[\d\] = 8000 is larger than all \d+ elements "
                   r".*model.safetensors holds"),
    ([10**9], r"model_config\.encoder\.hidden_sizes\[0\] = 1000000000 is larger than all"),
    ([6] * 10**6, r"checkpoint.json: model_config has 1000000 layers \(model_config\.encoder\.hidden_sizes\), "
                  r"but .*model.safetensors holds only 22 tensors"),
])
def test_an_absurd_config_is_refused_before_building(tmp_path, builds, sizes, message):
    ck = checkpoint.save(tmp_path / "ck", tagger())
    edit_manifest(ck, lambda m: m["model_config"]["encoder"].__setitem__("hidden_sizes", sizes))
    builds.clear()
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(ck)
    assert builds == []


def test_a_meta_build_far_larger_than_the_file_is_stopped(tmp_path, builds):
    # 600 tags pass the size check (the file holds more elements) but the CRF's (600, 600)
    # masks are far more than the file holds; unguarded, its 360,000-step Python loop runs.
    tags = ["O", "B-X", "I-X"]
    ck = checkpoint.save(tmp_path / "ck", tagger(num_tags=3, tags=tags, constraints="bio"))
    many = ["O"] + [f"{p}-T{i}" for i in range(300) for p in "BI"][:599]
    edit_manifest(ck, lambda m: m["model_config"].update(num_tags=600, tags=many))
    builds.clear()
    with pytest.raises(CheckpointError, match=r"checkpoint.json: model_config describes a SequenceTagger "
                       r"that creates more than \d+ tensor elements \(the file holds \d+\)"):
        checkpoint.load(ck)
    assert builds == ["meta"]


def test_a_meta_build_past_the_time_limit_is_stopped(tmp_path, monkeypatch):
    ck = checkpoint.save(tmp_path / "ck", tagger())
    monkeypatch.setattr(checkpoint, "_BUILD_SECONDS", 0.0)
    with pytest.raises(CheckpointError, match=r"SequenceTagger that took longer than 0 s to build"):
        checkpoint.load(ck)


def test_a_weight_of_another_dtype_is_refused_not_cast(tmp_path):
    model = tagger()
    model.emissions.bias.data = model.emissions.bias.data.double()
    ck = checkpoint.save(tmp_path / "ck", model)
    with pytest.raises(CheckpointError, match=r"tensor 'emissions\.bias': model_config gives shape \(4,\) "
                       r"float32, the file holds \(4,\) float64"):
        checkpoint.load(ck)


def test_missing_and_unexpected_tensors(tmp_path):
    ck = checkpoint.save(tmp_path / "ck", tagger())
    rewrite_weights(ck, lambda t: {k: v for k, v in t.items() if k != "crf.start"})
    with pytest.raises(CheckpointError, match=r"tensor 'crf\.start' \(4,\) is missing from the file"):
        checkpoint.load(ck)
    ck = checkpoint.save(tmp_path / "ck", tagger())
    rewrite_weights(ck, lambda t: {**t, "extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"the file holds tensor\(s\) the model does not have: 'extra\.weight'"):
        checkpoint.load(ck)


@checkpoint.register
class TiedByAssignment(nn.Module):
    """Ties the classic way: two parameter names for one tensor (save_model stores one)."""

    def __init__(self, *, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.config = dict(vocab_size=vocab_size, dim=dim)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.output = nn.Linear(dim, vocab_size)
        self.output.weight = self.embedding.weight

    def forward(self, ids):
        return self.output(self.embedding(ids))


def test_tied_weights_stored_once_still_load(tmp_path):
    torch.manual_seed(0)
    model = TiedByAssignment(vocab_size=7, dim=3)
    ck = checkpoint.save(tmp_path / "ck", model)
    from safetensors import safe_open
    with safe_open(str(ck / "model.safetensors"), "pt") as f:
        assert len([k for k in f.keys() if k.endswith("weight")]) == 1
    loaded = checkpoint.load(ck).model
    assert loaded.output.weight is loaded.embedding.weight
    ids = torch.tensor([[1, 2, 6]])
    assert torch.equal(loaded(ids), model(ids))


# --------------------------------------------------------------- malformed manifests

@pytest.mark.parametrize("edit, message", [
    (lambda m: m.__setitem__("files", [m["files"]]), r"files: must be an object .*; got an array"),
    (lambda m: m["files"]["model.safetensors"].pop("bytes"), r"files\.model\.safetensors\.bytes: missing"),
    (lambda m: m["files"]["model.safetensors"].__setitem__("bytes", "1"),
     r"files\.model\.safetensors\.bytes: must be an integer >= 0; got a string"),
    (lambda m: m["files"]["model.safetensors"].__setitem__("bytes", -1),
     r"files\.model\.safetensors\.bytes: must be an integer >= 0; got -1"),
    (lambda m: m["files"]["model.safetensors"].__setitem__("sha256", None),
     r"files\.model\.safetensors\.sha256: must be 64 lowercase hex digits; got null"),
    (lambda m: m["files"].__setitem__("model.safetensors", 5), r"files\.model\.safetensors: must be an object"),
    (lambda m: m["vocabs"].__setitem__("words", 3), r"vocabs\.words: must be an object .*; got a number"),
    (lambda m: m.__setitem__("extra", []), r"extra: must be an object; got an array"),
    (lambda m: m.__setitem__("model_config", []), r"model_config: must be an object .*; got an array"),
    (lambda m: m.__setitem__("model_type", 5), r"model_type: must be a string .*; got a number"),
    (lambda m: m.pop("files"), r"files: missing"),
])
def test_a_malformed_manifest_names_the_field(tmp_path, edit, message):
    ck = checkpoint.save(tmp_path / "ck", tagger(), vocabs={"words": {"itos": ["<pad>"]}})
    edit_manifest(ck, edit)
    with pytest.raises(CheckpointError, match=r"checkpoint.json: " + message):
        checkpoint.read_manifest(ck)
    with pytest.raises(CheckpointError, match=r"checkpoint.json: " + message):
        checkpoint.load(ck)
