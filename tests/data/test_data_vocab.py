"""Tokenisers, vocabularies and pretrained embeddings."""

import json
import re

import pytest
import torch

from rnnkit.data import Tokenizer, Vocab, load_embeddings


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------ tokenizer

def test_tokenizer_levels():
    assert Tokenizer()("  a\tb\u00a0c \n") == ["a", "b", "c"]  # any Unicode whitespace
    assert Tokenizer("regex")("Don't stop!") == ["Don", "'", "t", "stop", "!"]
    assert Tokenizer("regex", pattern=r"[a-z]+")("ab1cd") == ["ab", "cd"]
    assert Tokenizer("char")("a b") == ["a", " ", "b"]
    assert Tokenizer("char", keep_spaces=False)("a b") == ["a", "b"]


def test_cjk_per_character_keeps_latin_words_and_numbers():
    assert Tokenizer("cjk")("15.4寸笔记本，Very好") == ["15.4", "寸", "笔", "记", "本", "，", "Very", "好"]
    assert Tokenizer("cjk")("東京へ行きます") == ["東", "京", "へ", "行", "き", "ま", "す"]


def test_lowercase_and_digit_normalisation():
    tok = Tokenizer(lowercase=True, normalize_digits=True)
    assert tok("In 1984 AD") == ["in", "0000", "ad"]
    assert Tokenizer()("In 1984") == ["In", "1984"]


def test_tokenizer_json_round_trip_and_errors():
    tok = Tokenizer("regex", pattern=r"\w+", lowercase=True)
    again = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again("A b") == ["a", "b"]
    with pytest.raises(ValueError, match=r"level must be one of whitespace, regex, char, cjk; got 'bpe'"):
        Tokenizer("bpe")
    with pytest.raises(ValueError, match=r"pattern is only used with level='regex'"):
        Tokenizer("char", pattern="x")
    with pytest.raises(ValueError, match=r"pattern is not a valid regular expression"):
        Tokenizer("regex", pattern="(")


# ------------------------------------------------------------------------------ vocab

DOCS = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "end"]]


def test_specials_at_contract_ids_and_frequency_order():
    vocab = Vocab().fit(DOCS)
    assert vocab.itos_[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    # by count, ties alphabetical: the(3) sat(2) cat dog end (1 each)
    assert vocab.itos_[4:] == ["the", "sat", "cat", "dog", "end"]
    assert vocab.encode(["the", "zebra"]) == [4, 1] and vocab.decode([4, 5]) == ["the", "sat"]


def test_ids_do_not_depend_on_data_order():
    assert Vocab().fit(DOCS).itos_ == Vocab().fit(DOCS[::-1]).itos_


def test_min_freq_and_max_size_including_specials():
    assert Vocab(min_freq=2).fit(DOCS).itos_[4:] == ["the", "sat"]
    vocab = Vocab(max_size=6).fit(DOCS)
    assert len(vocab) == 6 and vocab.itos_[4:] == ["the", "sat"]
    small = Vocab(specials=("<pad>", "<unk>")).fit(DOCS)
    assert small.bos_id is None and small["the"] == 2


def test_tokens_equal_to_specials_are_not_duplicated():
    vocab = Vocab().fit([["<unk>", "a", "<eos>"]])  # PTB text contains <unk>; LM streams add <eos>
    assert vocab.itos_ == ["<pad>", "<unk>", "<bos>", "<eos>", "a"]


def test_unknown_label_names_label_place_and_known_labels():
    labels = Vocab.for_labels(["pos", "neg", "pos"])
    assert labels.itos_ == ["neg", "pos"] and labels.encode(["pos"]) == [1]
    with pytest.raises(ValueError, match=re.escape("dev.tsv:7: unknown label 'neutral'; known labels (2): neg, pos")):
        labels.encode(["neutral"], where="dev.tsv:7")
    many = Vocab.for_labels([f"T{i:02d}" for i in range(50)], name="tag")
    with pytest.raises(ValueError, match=r"unknown tag 'X'; known tags \(50\): T00, T01, .*T19, \.\.\. \(50 in all\)$"):
        many.encode(["X"])
    assert Vocab.for_labels(["b", "a"], sort=False).itos_ == ["b", "a"]


def test_vocab_json_round_trip():
    vocab = Vocab(min_freq=1, max_size=100).fit(DOCS)
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.encode(["dog", "??"]) == vocab.encode(["dog", "??"])
    labels = Vocab.for_labels(["x", "y"])
    again = Vocab.from_dict(json.loads(json.dumps(labels.to_dict())))
    with pytest.raises(ValueError, match="unknown label 'z'"):
        again.encode(["z"])


def test_vocab_argument_errors():
    with pytest.raises(ValueError, match=r"special <bos> must have id 2"):
        Vocab(specials=("<pad>", "<bos>"), unk=None)
    with pytest.raises(ValueError, match=r"min_freq must be an int >= 1; got 0"):
        Vocab(min_freq=0)
    with pytest.raises(ValueError, match=r"max_size must be None or an int >= len\(specials\) = 4; got 2"):
        Vocab(max_size=2)
    with pytest.raises(ValueError, match=r"unk='<oov>' must be one of the specials"):
        Vocab(unk="<oov>")
    with pytest.raises(RuntimeError, match="not fitted yet"):
        len(Vocab())
    with pytest.raises(TypeError, match="iterable of token lists; got a str"):
        Vocab().fit(["abc"])
    with pytest.raises(ValueError, match=r"token id 99 out of range \[0, 9\)"):
        Vocab().fit(DOCS).decode([99])
    with pytest.raises(ValueError, match="itos starts with"):
        Vocab.from_dict({"itos": ["a", "<pad>"], "specials": ["<pad>"], "unk": None})


# ------------------------------------------------------------------------------ embeddings

def test_word2vec_with_header_aligned_to_vocab(tmp_path):
    vocab = Vocab().fit(DOCS)
    path = write(tmp_path, "w2v.txt", "3 2\nthe 1 2\ncat 3 4\nunused 5 6\n")
    weight, found = load_embeddings(path, vocab, seed=0)
    assert weight.shape == (len(vocab), 2) and weight.dtype == torch.float32 and found == 2
    assert weight[vocab["the"]].tolist() == [1, 2] and weight[vocab["cat"]].tolist() == [3, 4]
    assert weight[vocab.pad_id].abs().sum() == 0
    again, _ = load_embeddings(path, vocab, seed=0)
    assert torch.equal(weight, again)  # unseen rows come from the seed
    assert not torch.equal(weight, load_embeddings(path, vocab, seed=1)[0])


def test_glove_without_header_lowercase_fallback_and_spaced_word(tmp_path):
    vocab = Vocab().fit([["The", "sat", "a b"]])
    path = write(tmp_path, "glove.txt", "the 1 2 3\nsat 4 5 6\na b 7 8 9\n")
    weight, found = load_embeddings(path, vocab)
    assert found == 2  # "The" is absent without lowercase
    weight, found = load_embeddings(path, vocab, lowercase=True)
    assert found == 3 and weight[vocab["The"]].tolist() == [1, 2, 3]
    assert weight[vocab["a b"]].tolist() == [7, 8, 9]


def test_embedding_dimension_errors_name_file_and_line(tmp_path):
    vocab = Vocab().fit(DOCS)
    path = write(tmp_path, "bad.txt", "the 1 2 3\ncat 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected D = 3 values after the word, got 2"):
        load_embeddings(path, vocab)
    path = write(tmp_path, "hdr.txt", "2 3\nthe 1 2 3\n")
    with pytest.raises(ValueError, match=r"hdr.txt:1: header says D = 3, expected dim = 4"):
        load_embeddings(path, vocab, dim=4)
    with pytest.raises(ValueError, match=r"hdr.txt:2: the header announces 2 vectors but the file has 1"):
        load_embeddings(path, vocab)
    path = write(tmp_path, "nan.txt", "the 1 x\n")
    with pytest.raises(ValueError, match=r"nan.txt:1: a value of 'the' is not a number"):
        load_embeddings(path, vocab)
    with pytest.raises(ValueError, match=r"empty.txt: file is empty"):
        load_embeddings(write(tmp_path, "empty.txt", b""), vocab)


def test_char_vocab_counts_characters_of_tokens():
    chars = Vocab(specials=("<pad>", "<unk>"), name="char").fit_chars([["ab", "b"], ["中"]])
    assert chars.itos_ == ["<pad>", "<unk>", "b", "a", "中"]
    assert chars.encode("ba?") == [2, 3, 1]
