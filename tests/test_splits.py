"""How dev and capped slices are drawn: seeded, at random, each class keeping its share."""

from collections import Counter

from rnnkit.config import parse_config
from rnnkit.run import _splits


def _sorted_csv(tmp_path, n_pos=90, n_neg=30):
    path = tmp_path / "sorted.csv"
    rows = [f"good film number {i},pos" for i in range(n_pos)] + [f"bad film number {i},neg" for i in range(n_neg)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def _cfg(data: dict, model: str = "SequenceClassifier", seed: int = 0):
    return parse_config({"data": data, "model": {"type": model, "options": {}},
                         "trainer": {"seed": seed}})


def _texts(examples):
    return [" ".join(ex.tokens) for ex in examples]


def test_dev_fraction_of_a_label_sorted_file_keeps_every_class_share(tmp_path):
    path = _sorted_csv(tmp_path)
    train, dev, _ = _splits(_cfg({"format": "csv", "train": str(path), "dev_fraction": 0.2}))
    assert Counter(ex.label for ex in dev) == {"pos": 18, "neg": 6}
    assert sorted(_texts(train) + _texts(dev)) == sorted(_texts(_splits(_cfg({"format": "csv", "train": str(path)}))[0]))
    assert not set(_texts(train)) & set(_texts(dev))
    # drawn, not the file's first of each class
    assert _texts(dev)[:18] != [f"good film number {i}" for i in range(18)]


def test_slices_are_seeded(tmp_path):
    path = _sorted_csv(tmp_path)
    data = {"format": "csv", "train": str(path), "dev_fraction": 0.2}
    assert _texts(_splits(_cfg(data))[1]) == _texts(_splits(_cfg(data))[1])
    assert _texts(_splits(_cfg(data))[1]) != _texts(_splits(_cfg(data, seed=1))[1])


def test_max_eval_examples_draws_from_each_class(tmp_path):
    path = _sorted_csv(tmp_path)
    _, dev, test = _splits(_cfg({"format": "csv", "train": str(path), "dev": str(path), "test": str(path),
                                 "max_eval_examples": 8, "max_train_examples": 40}))
    assert Counter(ex.label for ex in dev) == {"pos": 6, "neg": 2}
    assert Counter(ex.label for ex in test) == {"pos": 6, "neg": 2}
    train = _splits(_cfg({"format": "csv", "train": str(path), "max_train_examples": 40}))[0]
    assert Counter(ex.label for ex in train) == {"pos": 30, "neg": 10}


def test_a_tagger_slice_is_drawn_at_random(tmp_path):
    path = tmp_path / "t.conll"
    path.write_text("\n\n".join(f"w{i} X" for i in range(50)) + "\n")
    train = _splits(_cfg({"format": "conll", "train": str(path), "max_train_examples": 10}, "SequenceTagger"))[0]
    words = [ex.tokens[0] for ex in train]
    assert len(words) == 10 and words != [f"w{i}" for i in range(10)]
    assert words == sorted(words, key=lambda w: int(w[1:]))  # file order kept


def test_lm_text_dev_fraction_is_the_streams_tail(tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text("\n".join(f"a b c d e{i}" for i in range(20)) + "\n")
    whole = _splits(_cfg({"format": "lm_text", "train": str(path), "dev": str(path)}, "LanguageModel"))[0]
    train, dev, _ = _splits(_cfg({"format": "lm_text", "train": str(path), "dev_fraction": 0.1}, "LanguageModel"))
    assert train + dev == whole and len(dev) == round(len(whole) * 0.1)
