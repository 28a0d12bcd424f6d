"""Reading the real data sets in ../shared/datasets (skipped when that folder is absent).

Large files are read through their first lines only, written to tmp_path, to keep tests fast;
the two UEA series files are small and read whole. Nothing is copied into the repository.
"""

from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import (Encoder, LMStream, Tokenizer, Vocab, collate, read_conll, read_conllu,
                         read_delimited, read_lines, read_lm_text, read_parallel, read_ts)

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def dataset(relative: str) -> Path:
    path = DATASETS / relative
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def head(relative: str, tmp_path: Path, lines: int, *, to_blank: bool = False) -> Path:
    """The first ``lines`` lines of a data file (cut back to the last blank line if ``to_blank``)."""
    with open(dataset(relative), "rb") as f:
        chunk = [f.readline() for _ in range(lines)]
    if to_blank:
        chunk = chunk[: max(i for i, line in enumerate(chunk) if not line.strip()) + 1]
    path = tmp_path / Path(relative).name
    path.write_bytes(b"".join(chunk))
    return path


def test_japanese_vowels_unequal_lengths_load_and_batch():
    train = read_ts(dataset("japanese_vowels/JapaneseVowels_TRAIN.ts"))
    test = read_ts(dataset("japanese_vowels/JapaneseVowels_TEST.ts"))
    assert (len(train.examples), len(test.examples)) == (270, 370)
    assert train.class_labels == [str(k) for k in range(1, 10)] and train.dimensions == 12
    lengths = [ex.values.shape[0] for ex in train.examples + test.examples]
    assert (min(lengths), max(lengths)) == (7, 29)
    assert all(ex.values.shape[1] == 12 for ex in train.examples)
    first = train.examples[0]
    assert first.values.shape == (20, 12) and first.label == "1"
    np.testing.assert_allclose(first.values[:2, 0], [1.860936, 1.891651], rtol=1e-6)
    labels = Vocab.for_labels(train.class_labels, sort=False)
    batch = collate(Encoder(label_vocab=labels).encode_all(test.examples[:8]))
    assert batch["inputs"].shape[::2] == (8, 12) and batch["labels"].shape == (8,)


def test_basic_motions_equal_length():
    data = read_ts(dataset("basic_motions/BasicMotions_TRAIN.ts"))
    assert len(data.examples) == 40 and data.series_length == 100
    assert {ex.values.shape for ex in data.examples} == {(100, 6)}
    assert data.class_labels == ["Standing", "Running", "Walking", "Badminton"]


def test_ud_ewt_head_with_multiword_token(tmp_path):
    path = head("ud_en_ewt/en_ewt-ud-dev.conllu", tmp_path, 200, to_blank=True)
    sentences = read_conllu(path)
    words = [w for s in sentences for w in s.tokens]
    assert sentences[0].tokens == ["From", "the", "AP", "comes", "this", "story", ":"]
    assert sentences[0].tags == ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"]
    assert "didn't" not in words and "Today's" not in words  # range lines are not words
    assert [s for s in sentences if "did" in s.tokens][0].tokens[-3:] == ["did", "n't", "."]


def test_msra_head(tmp_path):
    sentences = read_conll(head("msra_ner/test_data", tmp_path, 60, to_blank=True))
    assert sentences[0].tags[:2] == ["B-ORG", "I-ORG"] and len(sentences[0].tokens[0]) == 1


def test_chnsenticorp_tsv_with_bare_quotes(tmp_path):
    path = head("chnsenticorp/luge/train.tsv", tmp_path, 200)
    examples = read_delimited(path, text_column="text_a", tokenizer=Tokenizer("cjk"))
    assert len(examples) == 199  # a quoting parser would merge the lines between bare quotes
    assert examples[0].tokens[:3] == ["选", "择", "珠"] and examples[0].label == "1"


def test_mr_is_latin1(tmp_path):
    path = head("mr/rt-polarity.pos", tmp_path, 50)
    with pytest.raises(ValueError, match=r"rt-polarity.pos:44: cannot decode byte 0xf3 .*encoding="):
        read_lines(path)
    assert len(read_lines(path, label="pos", encoding="latin-1")) == 50


def test_fra_eng_and_small_pairs(tmp_path):
    pairs = read_parallel(head("fra_eng/fra.txt", tmp_path, 30))
    assert pairs[0].source == ["Go."] and pairs[0].target == ["Va", "!"]
    small = read_parallel(dataset("fra_eng/fr-en-small.txt"), source_column=1, target_column=0)
    assert len(small) == 20


def test_ptb_stream(tmp_path):
    tokens = read_lm_text(head("ptb/ptb.valid.txt", tmp_path, 20))
    vocab = Vocab().fit([tokens])
    batches = list(LMStream(vocab.encode(tokens), batch_size=4, bptt=10))
    assert sum(int((b["labels"] != -100).sum()) for b in batches) == len(tokens) - 1


def test_sst2_glue_head(tmp_path):
    examples = read_delimited(head("sst2/glue/dev.tsv", tmp_path, 20), text_column="sentence")
    assert len(examples) == 19 and {ex.label for ex in examples} <= {"0", "1"}
