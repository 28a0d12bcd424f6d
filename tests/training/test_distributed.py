"""Multi-process training on the CPU (gloo), in real processes started by torch's launcher:
`rnnkit train CFG --nproc 2` against one process with twice the batch, a resumed 2-process run
against the uninterrupted one, and a failing worker ending the run with its error.

The processes run on torch's kernels (RNNKIT_COMPILED=0, and the in-process run alike): what is
checked here is how the work is shared, and a fresh worker would otherwise load (or, once per
machine, build) the compiled loop; the paths are checked against each other elsewhere."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rnnkit import checkpoint as ckpt
from rnnkit.config import parse_config
from rnnkit.run import train

ROOT = Path(__file__).parents[2]
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "log", "big", "red", "old"]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", RNNKIT_PROBE="0", RNNKIT_COMPILED="0")
    env.pop("WORLD_SIZE", None)
    return env


def _write_data(folder: Path) -> tuple[Path, Path]:
    """Sentences of 1 to 9 words (so ranks get different token counts), tagged by the word and
    the next one (so a bidirectional tagger learns something)."""
    rng = random.Random(3)

    def sentences(n):
        out = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 9))]
            tags = [("N" if w in WORDS[2:6] else "D") + ("x" if i + 1 < len(words) and words[i + 1] in WORDS[6:]
                                                        else "") for i, w in enumerate(words)]
            out.append("\n".join(f"{w} {t}" for w, t in zip(words, tags)))
        return "\n\n".join(out) + "\n"

    train_file, dev_file = folder / "train.conll", folder / "dev.conll"
    train_file.write_text(sentences(30))
    dev_file.write_text(sentences(11))
    return train_file, dev_file


def _config(folder: Path, out: str, *, batch_size: int, epochs: int, dropout: float = 0.0) -> dict:
    train_file, dev_file = folder / "train.conll", folder / "dev.conll"
    return {"name": "dist", "data": {"format": "conll", "train": str(train_file), "dev": str(dev_file)},
            "model": {"type": "SequenceTagger",
                      "options": {"embedding_dim": 6, "dropout": dropout,
                                  "encoder": {"cell": "gru", "hidden_sizes": [5], "bidirectional": True}}},
            "trainer": {"epochs": epochs, "batch_size": batch_size, "progress": False, "plots": False,
                        "num_threads": 1, "seed": 7, "clip_grad_norm": None, "out_dir": str(folder / out),
                        "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9}}}


def _cli_train(folder: Path, cfg: dict, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    path = folder / f"{Path(cfg['trainer']['out_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-m", "rnnkit", "train", str(path), "--nproc", str(nproc), *extra],
                         env=_env(), cwd=folder, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _weights(path: Path) -> dict:
    return ckpt.load(path).model.state_dict()


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    _write_data(folder)
    return folder


def test_two_processes_of_batch_b_equal_one_of_batch_2b(data, pure_paths):
    """A softmax tagger's loss is a mean over tokens, and the two halves of each global batch
    hold different numbers of tokens: the per-rank weighting makes the steps equal anyway."""
    run = _cli_train(data, _config(data, "two", batch_size=3, epochs=2))
    assert "2 processes on this machine through torch.distributed.run" in run.stderr
    summaries = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["epochs"] == 2  # rank 0 alone reports
    train(parse_config(_config(data, "one", batch_size=6, epochs=2)))

    two, one = _weights(data / "two" / "last"), _weights(data / "one" / "last")
    for name in one:
        assert torch.allclose(two[name], one[name], atol=1e-5, rtol=0), \
            f"{name}: max diff {float((two[name] - one[name]).abs().max()):.3g}"
    # dev metrics over the whole dev set: each process evaluated its share, then merged
    log_two, log_one = _log(data / "two"), _log(data / "one")
    assert [r["step"] for r in log_two] == [r["step"] for r in log_one] == [5, 10]
    for a, b in zip(log_two, log_one):
        assert a["dev"]["loss"] == pytest.approx(b["dev"]["loss"], abs=1e-5)
        assert a["dev"]["accuracy"] == b["dev"]["accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


def _torchrun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(Path(__file__).with_name("dist_worker.py")), *args],
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def test_resumed_two_process_run_equals_the_uninterrupted_one(data):
    """With dropout on, so that every process's random state must come back as it was. One
    launch: the same two processes train 2 epochs, then 1 epoch elsewhere, then resume that;
    the resumed run reads everything it continues from out_dir/last (the random states of both
    processes included, which it sets over whatever the processes drew before)."""
    configs = []
    for name, out, epochs in (("whole", "whole", 2), ("half", "halves", 1), ("half-resume", "halves", 2)):
        cfg = {**_config(data, out, batch_size=3, epochs=epochs, dropout=0.3), "name": name}
        configs.append(data / f"{name}.yaml")
        configs[-1].write_text(yaml.safe_dump(cfg))
    run = _torchrun("train", *map(str, configs))
    assert run.returncode == 0, run.stderr[-3000:]
    whole, halves = _weights(data / "whole" / "last"), _weights(data / "halves" / "last")
    for name in whole:
        assert torch.allclose(whole[name], halves[name], atol=1e-6, rtol=0), name
    state = ckpt.load_state(data / "halves" / "last")
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert [r["dev"] for r in _log(data / "halves")] == [r["dev"] for r in _log(data / "whole")]


def test_a_failing_worker_ends_the_run_with_its_error(tmp_path):
    run = _torchrun("bad-label", str(tmp_path / "run"), timeout=120)
    assert run.returncode != 0
    assert "must hold tag ids in [0, 2]" in run.stderr  # rank 1's own error
    assert re.search(r"rank\s*:\s*1 ", run.stderr), run.stderr[-2000:]  # the launcher names the rank
    assert not (tmp_path / "run" / "last").exists()


def test_nproc_is_refused_below_one_and_under_torchrun(data, monkeypatch, capsys):
    from rnnkit.cli import main

    path = data / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(data, "never", batch_size=2, epochs=1)))
    with pytest.raises(SystemExit) as stop:
        main(["train", str(path), "--nproc", "0"])
    assert stop.value.code == 2
    assert "argument --nproc: must be an integer >= 1; got 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(path), "--nproc", "2"]) == 2
    assert "this process already runs under torchrun (WORLD_SIZE=2)" in capsys.readouterr().err
    assert not (data / "never").exists()
