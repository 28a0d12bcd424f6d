"""How dev and capped slices are drawn: seeded, at random, each class keeping its share."""

from collections import Counter

from rnnkit.config import parse_config
from rnnkit.run.reading import _splits


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


# ----------------------------------------------------------------- word forms and rare words

def test_conll_word_forms_are_normalised_for_training_and_prediction(tmp_path):
    from rnnkit.run import Predictor, prepare, train

    path = tmp_path / "t.conll"
    path.write_text("Born X\nin X\n1984 NUM\n\nborn X\nIN X\n2001 NUM\n" * 3)
    cfg = parse_config({"data": {"format": "conll", "train": str(path), "dev": str(path),
                                 "lowercase": True, "normalize_digits": True},
                        "model": {"type": "SequenceTagger", "options": {"embedding_dim": 4, "encoder": {"hidden_sizes": [4]}}},
                        "trainer": {"epochs": 1, "batch_size": 2, "progress": False, "plots": False,
                                    "num_threads": 1, "out_dir": str(tmp_path / "run")}})
    p = prepare(cfg)
    assert set(p.vocabs["words"].itos_) >= {"born", "in", "0000"}
    assert not set(p.vocabs["words"].itos_) & {"Born", "IN", "1984", "2001"}
    train(cfg)
    predictor = Predictor(tmp_path / "run" / "best")
    seen = []
    predictor._encoder = lambda ex, encode=predictor._encoder: seen.append(ex.tokens) or encode(ex)
    record = predictor.batch([("x", {"tokens": ["BORN", "In", "1999"]})])[0]
    assert record["tokens"] == ["BORN", "In", "1999"]  # the record keeps the input's tokens
    assert seen == [["born", "in", "0000"]]  # the model reads them as training read its words


def test_unk_replace_drops_only_singletons_at_the_rate_asked(tmp_path):
    from rnnkit.run import UnkReplace, prepare

    path = tmp_path / "t.tsv"
    rows = [f"common words here rare{i}\t{'pos' if i % 2 else 'neg'}" for i in range(200)]
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    cfg = parse_config({"data": {"format": "tsv", "train": str(path), "dev": str(path), "unk_replace": 0.5},
                        "model": {"type": "SequenceClassifier", "options": {}},
                        "trainer": {"batch_size": 16}})
    p = prepare(cfg)
    assert isinstance(p.train, UnkReplace) and len(p.train) == len(p.train.batches)
    words = p.vocabs["words"]
    common = {words["common"], words["words"], words["here"]}
    drawn = rare = 0
    p.train.set_epoch(0)
    first = [b["inputs"].clone() for b in p.train]
    for batch in first:
        ids = batch.flatten().tolist()
        drawn += sum(i == words.unk_id for i in ids)
        rare += sum(i not in common and i not in (0, words.unk_id) for i in ids)
    assert 0.4 < drawn / (drawn + rare) < 0.6  # about half the 200 rare words, none of the common
    assert all(i in common or i == 0 or i == words.unk_id or words.itos_[i].startswith("rare")
               for b in first for i in b.flatten().tolist())
    p.train.set_epoch(0)
    assert all(bool((a == b["inputs"]).all()) for a, b in zip(first, p.train))  # same epoch, same draws
    assert prepare(parse_config({**cfg.model_dump(), "data": {**cfg.data.model_dump(), "unk_replace": 0.0}})).train.__class__.__name__ == "Batches"


def test_unk_replace_is_refused_for_series():
    import pytest

    from rnnkit.config import ConfigError

    with pytest.raises(ConfigError, match="unk_replace .* a .ts series has none"):
        parse_config({"data": {"format": "ts", "train": "x.ts", "unk_replace": 0.3},
                      "model": {"type": "SequenceClassifier", "options": {}}})
