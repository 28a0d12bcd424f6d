"""CoNLL column files and CoNLL-U."""

import re

import pytest

from rnnkit.data import TaggedExample, read_conll, read_conllu


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_conll2003_docstart_blank_lines_and_columns(tmp_path):
    path = write(tmp_path, "train.conll", CONLL2003)
    sentences = read_conll(path)
    assert sentences[0] == TaggedExample(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], f"{path}:3")
    assert [s.where for s in sentences] == [f"{path}:3", f"{path}:7", f"{path}:13"]
    assert read_conll(path, tag_column=1)[1].tags == ["NNP", "NNP"]  # POS instead of NER
    assert read_conll(path, tag_column=None)[2] == TaggedExample(["BRUSSELS"], None, f"{path}:13")


def test_msra_style_tab_separated_characters(tmp_path):
    path = write(tmp_path, "msra", "中\tB-ORG\n共\tI-ORG\n\n我\tO\n")  # no final blank line
    sentences = read_conll(path)
    assert [(s.tokens, s.tags) for s in sentences] == [(["中", "共"], ["B-ORG", "I-ORG"]), (["我"], ["O"])]


def test_wrong_column_count_reports_file_line_and_content(tmp_path):
    path = write(tmp_path, "train.conll", "EU\tNNP\tB-NP\tB-ORG\nTeddy\tNNP\tB-PER\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}:2: expected 4 tab-separated columns, got 3: 'Teddy\\tNNP\\tB-PER'")):
        read_conll(path)
    with pytest.raises(ValueError, match=r"train.conll:2: expected 4 tab"):
        read_conll(path, num_columns=4)


def test_malformed_lines(tmp_path):
    path = write(tmp_path, "a.conll", "word\n")
    with pytest.raises(ValueError, match=r"a.conll:1: expected a token and a tag column, got 1 column"):
        read_conll(path)
    path = write(tmp_path, "b.conll", "w\tO\nx\t\n")
    with pytest.raises(ValueError, match=r"b.conll:2: empty column in 'x\\t'"):
        read_conll(path)
    path = write(tmp_path, "c.conll", "w O\n")
    with pytest.raises(ValueError, match=r"c.conll:1: tag_column=5 is out of range"):
        read_conll(path, tag_column=5)


def test_conll_file_without_sentences(tmp_path):
    path = write(tmp_path, "d.conll", "-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(ValueError, match=r"d.conll: no sentences found"):
        read_conll(path)
    with pytest.raises(ValueError, match=r"e.conll: file is empty"):
        read_conll(write(tmp_path, "e.conll", b""))


def test_conll_undecodable_bytes(tmp_path):
    path = write(tmp_path, "f.conll", b"a\tO\n\nb\xff\tO\n")
    with pytest.raises(ValueError, match=r"f.conll:3: cannot decode byte 0xff at byte offset 6.*encoding="):
        read_conll(path)


# ------------------------------------------------------------------------------ CoNLL-U

def row(id_, form, upos="NOUN", xpos="NN"):
    return "\t".join([id_, form, form.lower(), upos, xpos, "_", "0", "root", "_", "_"])


CONLLU = "\n".join([
    "# sent_id = 1",
    "# text = I didn't go.",
    row("1", "I", "PRON", "PRP"),
    row("2-3", "didn't", "_", "_"),
    row("2", "did", "AUX", "VBD"),
    row("3", "n't", "PART", "RB"),
    row("4", "go", "VERB", "VB"),
    row("4.1", "went", "VERB", "VBD"),
    row("5", ".", "PUNCT", "."),
    "",
    "# sent_id = 2",
    row("1", "Yes", "INTJ", "UH"),
    "",
]) + "\n"


def test_conllu_multiword_ranges_and_empty_nodes_are_not_words(tmp_path):
    path = write(tmp_path, "en.conllu", CONLLU)
    sentences = read_conllu(path)
    assert sentences[0] == TaggedExample(["I", "did", "n't", "go", "."],
                                         ["PRON", "AUX", "PART", "VERB", "PUNCT"], f"{path}:3")
    assert sentences[1].where == f"{path}:12"
    ranged = write(tmp_path, "r.conllu", "\n".join([row("1-2", "Today's"), row("1", "Today"), row("2", "'s")]))
    assert read_conllu(ranged)[0] == TaggedExample(["Today", "'s"], ["NOUN", "NOUN"], f"{ranged}:1")
    assert read_conllu(path, tag="xpos")[0].tags == ["PRP", "VBD", "RB", "VB", "."]
    assert read_conllu(path, tag=None, lowercase=True)[1] == TaggedExample(["yes"], None, f"{path}:12")


@pytest.mark.parametrize("lines, message", [
    ([row("1", "a"), row("3", "b")], r"x.conllu:2: expected word ID 2, got 3"),
    ([row("1", "a"), row("3-4", "ab")], r"x.conllu:2: multi-word token range 3-4 must start at the next word ID 2"),
    ([row("1-2", "ab"), row("1", "a")], r"x.conllu:1: sentence ends at word 1 inside a multi-word token"),
    ([row("0.1", "e")], r"x.conllu:1: sentence has no words"),
    ([row("1", "a"), row("2.1", "e")], r"x.conllu:2: empty node 2.1 must follow word 2; the last word is 1"),
    ([row("1", "a"), row("x", "b")], r"x.conllu:2: ID 'x' is not a word ID"),
    ([row("1", "a"), "2\tb\tb\tNOUN"], r"x.conllu:2: expected 10 tab-separated columns \(CoNLL-U\), got 4"),
    ([row("1", "a", upos="_")], r"x.conllu:1: UPOS is '_' \(not annotated\) for word 1"),
])
def test_conllu_malformed(tmp_path, lines, message):
    path = write(tmp_path, "x.conllu", "\n".join(lines) + "\n\n")
    with pytest.raises(ValueError, match=message):
        read_conllu(path)


def test_conllu_bad_tag_choice_and_empty(tmp_path):
    path = write(tmp_path, "y.conllu", CONLLU)
    with pytest.raises(ValueError, match=r"tag must be one of upos, xpos, deprel or None; got 'lemma'"):
        read_conllu(path, tag="lemma")
    with pytest.raises(ValueError, match=r"z.conllu: no sentences found"):
        read_conllu(write(tmp_path, "z.conllu", "# only a comment\n"))
