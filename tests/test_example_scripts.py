"""The data scripts that examples' first comments say to run (they write runs/data/...)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fra_eng_splits_keep_every_pair_and_no_english_sentence_in_two_splits(tmp_path):
    pairs = tmp_path / "fra.txt"
    lines = []
    for i in range(300):  # 100 English sentences with 1-3 translations; some with a third column
        for k in range(1 + i % 3):
            extra = "\tCC-BY 2.0 (France) Attribution: tatoeba.org" if i % 5 == 0 else ""
            lines.append(f"{'word ' * (1 + i % 14)}{i}.\tfr {i} {k}{extra}")
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    mod = _script("make_fra_eng_splits")
    assert mod.main(["--pairs", str(pairs), "--out", str(out), "--dev", "0.1", "--test", "0.2"]) == 0
    split = {name: (out / f"{name}.txt").read_text(encoding="utf-8").splitlines() for name in ("train", "dev", "test")}
    assert sorted(sum(split.values(), [])) == sorted(lines)  # every line, as it was
    english = {name: {line.split("\t")[0] for line in rows} for name, rows in split.items()}
    assert not english["train"] & english["test"] and not english["train"] & english["dev"]
    assert not english["dev"] & english["test"]
    assert len(english["test"]) == 60 and len(english["dev"]) == 30  # shares of the 300 sentences
    short = (out / "test_short.txt").read_text(encoding="utf-8").splitlines()
    assert short == [row for row in split["test"] if len(row.split("\t")[0].split()) <= 10]
    assert 0 < len(short) < len(split["test"])
    # the same draw whatever else runs: a second call writes the same files
    again = tmp_path / "again"
    mod.main(["--pairs", str(pairs), "--out", str(again), "--dev", "0.1", "--test", "0.2"])
    assert (again / "test.txt").read_text() == (out / "test.txt").read_text()


def test_fra_eng_splits_name_a_bad_line(tmp_path):
    pairs = tmp_path / "fra.txt"
    pairs.write_text("Go.\tVa !\nno tab here\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"fra.txt:2: expected source TAB target, found 1 column"):
        _script("make_fra_eng_splits").main(["--pairs", str(pairs), "--out", str(tmp_path / "o")])
