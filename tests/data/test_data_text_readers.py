"""Text readers: CSV/TSV, JSONL, label-text, line files, folders, parallel text, LM text."""

import json
import re

import pytest

from rnnkit.data import (PairExample, TextExample, Tokenizer, read_delimited, read_folder,
                         read_jsonl, read_label_text, read_lines, read_lm_text, read_parallel)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------ CSV / TSV

def test_tsv_with_named_columns_and_bare_quotes(tmp_path):
    # A bare quote must not start a quoted field in TSV (ChnSentiCorp has such lines).
    path = write(tmp_path, "train.tsv", 'label\ttext_a\n1\tsaid "great\n0\tbad " film\n')
    examples = read_delimited(path, text_column="text_a")
    assert [ex.tokens for ex in examples] == [["said", '"great'], ["bad", '"', "film"]]
    assert [ex.label for ex in examples] == ["1", "0"]
    assert examples[1].where == f"{path}:3"


def test_csv_quoted_field_spanning_lines_keeps_start_line(tmp_path):
    path = write(tmp_path, "d.csv", 'label,review\n1,"good, very\ngood"\n0,bad\n')
    examples = read_delimited(path, text_column="review")
    assert examples[0].tokens == ["good,", "very", "good"]
    assert [ex.where for ex in examples] == [f"{path}:2", f"{path}:4"]


def test_columns_by_index_without_header_and_float_labels(tmp_path):
    path = write(tmp_path, "r.tsv", "a b\t0.5\nc\t-2\n")
    examples = read_delimited(path, header=False, text_column=0, label_column=1, label_type="float")
    assert [ex.label for ex in examples] == [0.5, -2.0]


def test_unlabelled_and_custom_tokenizer(tmp_path):
    path = write(tmp_path, "t.tsv", "index\tsentence\n0\tHello, World\n")
    examples = read_delimited(path, text_column="sentence", label_column=None,
                              tokenizer=Tokenizer("regex", lowercase=True))
    assert examples[0] == TextExample(["hello", ",", "world"], None, f"{path}:2")


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.tsv", "label\ttext\n1\tok\n0\tone\textra\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: expected 2 tab-separated columns, got 3")):
        read_delimited(path)


def test_missing_column_name_lists_columns(tmp_path):
    path = write(tmp_path, "x.csv", "label,review\n1,ok\n")
    with pytest.raises(ValueError, match=r"x.csv:1: no column 'text' in the header; columns are: label, review"):
        read_delimited(path)


def test_float_label_that_is_not_a_number(tmp_path):
    path = write(tmp_path, "r.csv", "text,label\nfine,0.3\nbad,high\n")
    with pytest.raises(ValueError, match=r"r.csv:3: cannot read column 'label' value 'high' as a number"):
        read_delimited(path, label_type="float")


def test_empty_text_is_an_error_unless_skipped_with_warning(tmp_path):
    path = write(tmp_path, "e.csv", "label,text\n1,good\n0,\n1,fine\n")
    with pytest.raises(ValueError, match=r"e.csv:3: column 'text' is empty .*skip_empty=True"):
        read_delimited(path)
    with pytest.warns(UserWarning, match=r"skipped 1 example\(s\) with empty text .* line\(s\) 3"):
        examples = read_delimited(path, skip_empty=True)
    assert [ex.tokens for ex in examples] == [["good"], ["fine"]]


def test_malformed_csv_quoting_names_the_line(tmp_path):
    path = write(tmp_path, "m.csv", 'text,label\nfine,1\n"bad"x,0\n')
    with pytest.raises(ValueError, match=r"m.csv:3: malformed CSV"):
        read_delimited(path)


def test_unknown_suffix_needs_delimiter(tmp_path):
    path = write(tmp_path, "data.txt", "text,label\na,1\n")
    with pytest.raises(ValueError, match=r"cannot infer the delimiter from suffix '.txt'"):
        read_delimited(path)
    assert read_delimited(path, delimiter=",")[0].label == "1"


# ------------------------------------------------------------------------------ bad files, every reader

READERS = [  # (file name, reader, a valid first line)
    ("a.tsv", read_delimited, "text\tlabel"),
    ("a.jsonl", read_jsonl, '{"text": "a", "label": 1}'),
    ("a.txt", read_label_text, "1 ok"),
    ("a.txt", read_lines, "ok"),
    ("a.txt", read_parallel, "o\tk"),
    ("a.txt", read_lm_text, "ok"),
]


@pytest.mark.parametrize("name, reader, first", READERS)
def test_empty_file(tmp_path, name, reader, first):
    path = write(tmp_path, name, b"")
    with pytest.raises(ValueError, match=re.escape(f"{path}: file is empty")):
        reader(path)


@pytest.mark.parametrize("name, reader, first", READERS)
def test_undecodable_bytes_name_line_offset_and_encoding_option(tmp_path, name, reader, first):
    path = write(tmp_path, name, first.encode() + b"\nd\xe9j\xe0 vu\tx\n")  # Latin-1, not UTF-8
    offset = len(first.encode()) + 2
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: cannot decode byte 0xe9 at byte offset {offset} "
                                                   f"(column 2)") + r".*as utf-8.*encoding="):
        reader(path)


def test_undecodable_bytes_in_a_quoted_csv_field(tmp_path):
    path = write(tmp_path, "q.csv", b'text,label\n"multi\nline \xff",1\n')
    with pytest.raises(ValueError, match=r"q.csv:3: cannot decode byte 0xff at byte offset 23 \(column 6\)"):
        read_delimited(path)


def test_other_encoding_by_option(tmp_path):
    path = write(tmp_path, "mr.txt", "déjà vu\n".encode("latin-1"))
    assert read_lines(path, encoding="latin-1", label="pos")[0].tokens == ["déjà", "vu"]


def test_utf16_file_by_option(tmp_path):
    path = write(tmp_path, "w.tsv", "text\tlabel\n中文 ok\t1\n".encode("utf-16"))
    assert read_delimited(path, encoding="utf-16")[0].tokens == ["中文", "ok"]
    assert read_lines(path, encoding="utf-16")[1].tokens == ["中文", "ok", "1"]


def test_nel_byte_in_latin1_is_not_a_line_break(tmp_path):
    # 0x85 is U+0085 (NEL) in Latin-1; str.splitlines would split there (MR has such bytes).
    path = write(tmp_path, "mr.txt", b"one\x85two\nthree\n")
    examples = read_lines(path, encoding="latin-1")
    assert len(examples) == 2 and examples[1].where == f"{path}:2"


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    path = write(tmp_path, "b.csv", "\ufefftext,label\nhi,1\n".encode("utf-8"))
    assert read_delimited(path)[0].tokens == ["hi"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_delimited(tmp_path / "nope.tsv")


# ------------------------------------------------------------------------------ JSONL

def test_jsonl_text_or_tokens_and_blank_lines(tmp_path):
    lines = [json.dumps({"text": "a b", "label": 1}), "", json.dumps({"text": ["c"], "label": "x"})]
    path = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    examples = read_jsonl(path)
    assert [(ex.tokens, ex.label, ex.where) for ex in examples] == [
        (["a", "b"], "1", f"{path}:1"), (["c"], "x", f"{path}:3")]


def test_jsonl_configurable_fields(tmp_path):
    path = write(tmp_path, "d.jsonl", json.dumps({"review": "good", "score": 4.5}) + "\n")
    assert read_jsonl(path, text_field="review", label_field="score", label_type="float")[0].label == 4.5


def test_jsonl_errors(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: invalid JSON"):
        read_jsonl(path)
    path = write(tmp_path, "e.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n')
    with pytest.raises(ValueError, match=r"e.jsonl:2: missing field 'text'; fields are: txt, label"):
        read_jsonl(path)


# ------------------------------------------------------------------------------ other line formats

def test_label_text_lines(tmp_path):
    path = write(tmp_path, "stsa.binary.train", "1 a stirring , funny film\n0 bad .\n")
    examples = read_label_text(path)
    assert examples[0] == TextExample(["a", "stirring", ",", "funny", "film"], "1", f"{path}:1")
    bad = write(tmp_path, "bad", "1 ok\n0\n")
    with pytest.raises(ValueError, match=r"bad:2: expected 'label text', got '0'"):
        read_label_text(bad)


def test_blank_line_in_one_example_per_line_file_is_an_error(tmp_path):
    path = write(tmp_path, "s.txt", "a b\n\nc\n")
    with pytest.raises(ValueError, match=r"s.txt:2: the line is empty"):
        read_lines(path)


def test_folder_per_label(tmp_path):
    for label, name, text in [("pos", "1_9.txt", "great\nfilm"), ("neg", "0_2.txt", "dull")]:
        (tmp_path / label).mkdir(exist_ok=True)
        write(tmp_path / label, name, text)
    examples = read_folder(tmp_path)
    assert [(ex.label, ex.tokens) for ex in examples] == [("neg", ["dull"]), ("pos", ["great", "film"])]


# ------------------------------------------------------------------------------ parallel

def test_parallel_fra_eng_format_and_direction(tmp_path):
    path = write(tmp_path, "fra.txt", "Go.\tVa !\nHi.\tSalut !\tCC-BY 2.0 (France) Attribution\n")
    pairs = read_parallel(path)
    assert pairs[0] == PairExample(["Go."], ["Va", "!"], f"{path}:1")
    assert pairs[1].target == ["Salut", "!"]  # the attribution column is ignored
    assert read_parallel(path, source_column=1, target_column=0)[0].source == ["Va", "!"]


def test_parallel_errors(tmp_path):
    path = write(tmp_path, "p.txt", "a\tb\nno tab here\n")
    with pytest.raises(ValueError, match=r"p.txt:2: expected at least 2 tab-separated columns, got 1"):
        read_parallel(path)
    path = write(tmp_path, "q.txt", "a\tb\tc\n")
    with pytest.raises(ValueError, match=r"q.txt:1: expected 2 tab-separated columns, got 3"):
        read_parallel(path, num_columns=2)
    path = write(tmp_path, "r.txt", "a\t \n")
    with pytest.raises(ValueError, match=r"r.txt:1: target column 1 is empty"):
        read_parallel(path)


# ------------------------------------------------------------------------------ LM text

def test_lm_text_word_level_adds_eos_per_line(tmp_path):
    path = write(tmp_path, "ptb.txt", " the cat <unk>\n\n a dog\n")
    assert read_lm_text(path) == ["the", "cat", "<unk>", "<eos>", "a", "dog", "<eos>"]
    assert read_lm_text(path, skip_blank=False).count("<eos>") == 3


def test_lm_text_char_level(tmp_path):
    path = write(tmp_path, "tm.txt", "ab c\nd\n")
    assert read_lm_text(path, tokenizer=Tokenizer("char"), eos="\n") == list("ab c\nd\n")
    assert read_lm_text(path, tokenizer=Tokenizer("char", keep_spaces=False), eos=None) == list("abcd")


def test_lm_text_with_only_blank_lines(tmp_path):
    path = write(tmp_path, "blank.txt", "x\n")
    path.write_text("\n\n \n")
    with pytest.raises(ValueError, match=r"blank.txt: file contains only whitespace"):
        read_lm_text(path)
