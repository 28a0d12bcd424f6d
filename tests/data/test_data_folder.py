"""The folder format (ROOT/<split>/<label>/*.txt, the aclImdb layout) from a config."""

import json
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.config import ConfigError, parse_config
from rnnkit.data import read_folder
from rnnkit.run.reading import _splits

IMDB_TINY = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "imdb_tiny" / "aclImdb_tiny"


def _corpus(root: Path) -> Path:
    docs = {"train/pos": ["a great film<br /><br />truly great", "fine &amp; fun"],
            "train/neg": ["a dull film<br />so dull", "bad"],
            "train/unsup": ["no label here"],
            "test/pos": ["great fun"], "test/neg": ["dull and bad"]}
    for folder, texts in docs.items():
        (root / folder).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / folder / f"{i}_7.txt").write_text(text)
    return root


def _cfg(root: Path, **data):
    return parse_config({"data": {"format": "folder", "train": str(root / "train"), "test": str(root / "test"),
                                  "labels": ["neg", "pos"], **data},
                         "model": {"type": "SequenceClassifier", "options": {"embedding_dim": 4,
                                                                             "encoder": {"hidden_sizes": [4]}}},
                         "trainer": {"epochs": 2, "batch_size": 2, "progress": False, "plots": False,
                                     "num_threads": 1, "out_dir": str(root / "run")}})


def test_only_the_named_label_folders_are_read_and_markup_is_stripped(tmp_path):
    train, _, test = _splits(_cfg(_corpus(tmp_path)))
    assert sorted({ex.label for ex in train}) == ["neg", "pos"]  # unsup/ is not a third class
    tokens = {t for ex in train for t in ex.tokens}
    assert "<br" not in tokens and "/><br" not in tokens and "&amp;" not in tokens
    assert ["a", "great", "film", "truly", "great"] in [ex.tokens for ex in train]
    assert ["fine", "&", "fun"] in [ex.tokens for ex in train]
    assert len(test) == 2
    kept = _splits(_cfg(tmp_path, markup=False))[0]
    assert "/><br" in {t for ex in kept for t in ex.tokens}


def test_a_missing_label_folder_names_it_and_what_is_there(tmp_path):
    _corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train/positive: no folder for label 'positive' "
                                                r"\(folders in .*train: neg, pos, unsup\)"):
        read_folder(tmp_path / "train", labels=["neg", "positive"])
    with pytest.raises(ConfigError, match=r"data.labels: List should have at least 2 items"):
        _cfg(tmp_path, labels=["pos"])


def test_train_evaluate_predict_from_folders(tmp_path, capsys):
    root = _corpus(tmp_path)
    from rnnkit.run import train

    summary = train(_cfg(root))
    assert "test" in summary and 0 <= summary["test"]["accuracy"] <= 1
    assert main(["evaluate", str(root / "run" / "best"), str(root / "test")]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == str(root / "test")
    inputs = tmp_path / "in.txt"
    inputs.write_text("a great film<br />truly\n")
    assert main(["predict", str(root / "run" / "best"), str(inputs)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] in ("neg", "pos")


@pytest.mark.skipif(not IMDB_TINY.is_dir(), reason="../shared/datasets/imdb_tiny is not here")
def test_the_aclimdb_tiny_layout_reads():
    examples = read_folder(IMDB_TINY / "train", labels=["neg", "pos"], markup=True)
    assert len(examples) == 20 and {ex.label for ex in examples} == {"neg", "pos"}
    assert not any(t.startswith("<br") or t.endswith("/>") for ex in examples for t in ex.tokens)
