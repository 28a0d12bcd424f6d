"""Span schemes: detection, checking, conversion, and what the CLI does with an IOB1 file."""

import json
import random

import pytest

from rnnkit.config import parse_config
from rnnkit.data import schemes
from rnnkit.run import Predictor, evaluate, prepare, train


def _random_chunks(rng: random.Random, length: int) -> list[tuple[int, int, str]]:
    """Chunks over ``length`` tokens, adjacent ones of one type included (IOB1's B- case)."""
    chunks, i = [], 0
    while i < length:
        if rng.random() < 0.5:
            size = rng.randint(1, 3)
            end = min(length, i + size)
            chunks.append((i, end, rng.choice(["PER", "LOC"])))
            i = end
        else:
            i += rng.randint(1, 2)
    return chunks


@pytest.mark.parametrize("seed", range(20))
def test_every_scheme_writes_and_reads_back_the_same_chunks(seed):
    rng = random.Random(seed)
    length = rng.randint(1, 12)
    chunks = _random_chunks(rng, length)
    written = {s: schemes.write(chunks, length, s) for s in schemes.SCHEMES}
    for s, tags in written.items():
        schemes.check(tags, s, "x:1")
        assert schemes.spans(tags, s) == chunks
        for target in schemes.SCHEMES:
            assert schemes.convert(tags, s, target) == written[target]


def test_the_three_schemes_differ_where_they_should():
    chunks = [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC")]
    assert schemes.write(chunks, 5, "iob1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert schemes.write(chunks, 5, "iob2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert schemes.write(chunks, 5, "iobes") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]


def test_detect_names_the_scheme_and_span_tags_tells_pos_from_ner():
    assert schemes.detect([["O", "I-PER", "I-PER"], ["O"]]) == "iob1"
    assert schemes.detect([["B-PER", "I-PER", "O", "B-LOC"]]) == "iob2"
    assert schemes.detect([["B-PER", "E-PER"], ["I-LOC"]]) == "iobes"
    assert schemes.detect([["I-PER", "I-PER"], ["I-LOC", "I-LOC", "B-LOC"]]) == "iob1"
    # an I- start beside a B- that IOB1 never writes (after another type): IOB2 with noise
    assert schemes.detect([["I-PER", "B-LOC"]]) == "iob2"
    assert schemes.span_tags(["O", "B-PER", "I-PER"])
    assert not schemes.span_tags(["NOUN", "VERB"])
    assert not schemes.span_tags(["O", "B-PER", "NOUN"])
    assert not schemes.span_tags(["O", "O"])  # nothing to tell the scheme by


@pytest.mark.parametrize("tags, scheme, why", [
    (["O", "I-PER"], "iob2", r"train.conll:7: token 2: 'I-PER' follows 'O', so it starts a chunk.*IOB1"),
    (["I-PER"], "iob2", r"follows the sentence start"),
    (["B-PER", "I-LOC"], "iob2", r"'I-LOC' follows 'B-PER'"),
    (["O", "B-PER"], "iob1", r"IOB1 uses B- only between two adjacent chunks.*IOB2"),
    (["B-PER", "O"], "iobes", r"'B-PER' opens a chunk that 'O' does not continue or end"),
    (["B-PER"], "iobes", r"leaves its chunk open"),
    (["O", "E-PER"], "iobes", r"continues no open PER chunk"),
    (["S-PER"], "iob2", r"an IOBES tag in a file read as IOB2"),
    (["NOUN"], "iob2", r"neither O nor B-/I-/E-/S-TYPE"),
])
def test_check_refuses_a_path_the_scheme_forbids_at_its_line(tags, scheme, why):
    with pytest.raises(ValueError, match=why):
        schemes.check(tags, scheme, "train.conll:7")


# ----------------------------------------------------------------------------- the pipeline

SENTENCES = [[("John", "I-PER"), ("Smith", "I-PER"), ("lives", "O"), ("in", "O"), ("Paris", "I-LOC")],
             [("Paris", "I-LOC"), ("is", "O"), ("big", "O")],
             [("Ann", "I-PER"), ("Bob", "B-PER"), ("met", "O")]]  # two adjacent PER chunks


def _write_iob1(path, copies=4):
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in SENTENCES * copies) + "\n")
    return path


def _cfg(tmp_path, data_file, **data):
    return parse_config({
        "data": {"format": "conll", "train": str(data_file), "dev": str(data_file), **data},
        "model": {"type": "SequenceTagger", "options": {
            "embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8], "bidirectional": True},
            "output": "crf", "constraints": "bio"}},
        "trainer": {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
                    "out_dir": str(tmp_path / "run")}})


def test_an_iob1_file_is_read_as_iob2_for_a_bio_crf(tmp_path):
    p = prepare(_cfg(tmp_path, _write_iob1(tmp_path / "train.conll")))
    assert p.tag_scheme == "iob1"
    tags = sorted(p.vocabs["labels"].itos_)
    assert "B-PER" in tags and "B-LOC" in tags
    batch = next(iter(p.train))
    # every gold path is one the BIO-constrained CRF allows: the loss is a likelihood, not 1e4s
    loss = float(p.model.loss(batch).detach())
    assert 0 < loss < 100, loss


def test_training_evaluating_and_predicting_on_iob1_files(tmp_path):
    data = _write_iob1(tmp_path / "train.conll")
    train(_cfg(tmp_path, data))
    metrics = evaluate(tmp_path / "run" / "best", data)
    assert metrics["loss"] < 100, metrics  # the raw IOB1 path would cost 1e4 per O -> I-X
    predictor = Predictor(tmp_path / "run" / "best", tag_scheme="input")
    model_tags = Predictor(tmp_path / "run" / "best").batch([("x", {"tokens": ["Ann", "Bob", "met"]})])[0]["tags"]
    input_tags = predictor.batch([("x", {"tokens": ["Ann", "Bob", "met"]})])[0]["tags"]
    assert schemes.convert(model_tags, "iob2", "iob1") == input_tags
    assert all(not t.startswith("B-") for t in input_tags[:1])  # IOB1 opens a lone chunk with I-
    from rnnkit.checkpoint import MANIFEST

    saved = json.loads((tmp_path / "run" / "best" / MANIFEST).read_text())
    assert saved["extra"]["tag_scheme"] == {"input": "iob1", "model": "iob2"}


def test_a_file_that_breaks_its_declared_scheme_is_refused_at_its_line(tmp_path):
    data = _write_iob1(tmp_path / "train.conll")
    with pytest.raises(ValueError, match=r"train.conll:1: token 1: 'I-PER' follows the sentence start"):
        prepare(_cfg(tmp_path, data, tag_scheme="iob2"))


def test_pos_tags_are_left_alone_and_predict_refuses_a_scheme_for_them(tmp_path):
    path = tmp_path / "pos.conll"
    path.write_text("the DET\ndog NOUN\n\na DET\ncat NOUN\n" * 3)
    cfg = parse_config({
        "data": {"format": "conll", "train": str(path), "dev": str(path)},
        "model": {"type": "SequenceTagger", "options": {"embedding_dim": 4, "encoder": {"hidden_sizes": [4]}}},
        "trainer": {"epochs": 1, "batch_size": 2, "progress": False, "plots": False, "num_threads": 1,
                    "out_dir": str(tmp_path / "run")}})
    assert prepare(cfg).tag_scheme is None
    train(cfg)
    with pytest.raises(ValueError, match="holds no span tagger"):
        Predictor(tmp_path / "run" / "best", tag_scheme="input")


def test_a_streamed_iob1_file_gets_the_tags_the_whole_file_reading_gives(tmp_path):
    from rnnkit.run import TrainFile

    data = _write_iob1(tmp_path / "train.conll")
    whole = prepare(_cfg(tmp_path, data))
    cfg = parse_config({**_cfg(tmp_path, data).model_dump(),
                        "data": {**_cfg(tmp_path, data).data.model_dump(), "streaming": True}})
    streamed = [ex.tags for ex in TrainFile(cfg)()]
    assert streamed[:3] == [["B-PER", "I-PER", "O", "O", "B-LOC"], ["B-LOC", "O", "O"], ["B-PER", "B-PER", "O"]]
    assert prepare(cfg).vocabs["labels"].itos_ == whole.vocabs["labels"].itos_
    bad = tmp_path / "bad.conll"
    bad.write_text("a O\nb I-PER\n\nc O\n")
    cfg = parse_config({**cfg.model_dump(), "data": {**cfg.data.model_dump(), "train": str(bad),
                                                     "dev": str(data), "tag_scheme": "iob2"}})
    with pytest.raises(ValueError, match=r"bad.conll:1: token 2: 'I-PER' follows 'O'"):
        list(TrainFile(cfg)())


def test_a_noisy_iob2_file_is_repaired_as_conlleval_reads_it_and_refused_when_declared(tmp_path, caplog):
    """IOB2 files often hold a few I-X that open a chunk (MSRA's train_data has one at line
    739,284); read with tag_scheme auto they are read as conlleval reads them -- the I-X opens a
    chunk, written B-X -- and counted in a warning, so a BIO-constrained CRF gets a path it
    allows; a file declared IOB2 is refused at the line."""
    import logging

    path = tmp_path / "noisy.conll"
    path.write_text("A B-PER\nb I-PER\nc O\n\nd O\ne I-LOC\n\nf B-LOC\ng O\n")
    assert schemes.detect([["B-PER", "I-PER", "O"], ["O", "I-LOC"], ["B-LOC", "O"]]) == "iob2"
    loose = parse_config({"data": {"format": "conll", "train": str(path), "dev": str(path)},
                          "model": {"type": "SequenceTagger", "options": {"embedding_dim": 4,
                                                                         "encoder": {"hidden_sizes": [4]}}},
                          "trainer": {"out_dir": str(tmp_path / "run")}})
    logger = logging.getLogger("rnnkit")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="rnnkit"):
            p = prepare(loose)
    finally:
        logger.removeHandler(caplog.handler)
    assert p.tag_scheme == "iob2"
    assert "1 sentence(s) break IOB2 (first: " in caplog.text and "noisy.conll:5: token 2" in caplog.text
    from rnnkit.run.reading import _splits

    train, _, _ = _splits(loose)
    assert [ex.tags for ex in train] == [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-LOC", "O"]]
    # a BIO-constrained CRF: the same repair, so that every gold path is one the constraints allow
    train, _, _ = _splits(_cfg(tmp_path, path))
    assert [ex.tags for ex in train] == [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-LOC", "O"]]
    assert all(schemes.violation(ex.tags, "iob2") is None for ex in train)
    with pytest.raises(ValueError, match=r"noisy.conll:5: token 2: 'I-LOC' follows 'O'"):
        prepare(_cfg(tmp_path, path, tag_scheme="iob2"))  # declared: the file must keep it
