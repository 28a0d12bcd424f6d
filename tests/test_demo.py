"""The demo at a reduced budget: the BiGRU must beat the GRU on the ambiguous tokens."""

import io
import json

from rnnkit.demo import AMBIGUOUS, CONTINUATIONS, make_corpus, run_demo


def test_corpus_labels_are_decided_by_later_words_only():
    corpus = make_corpus(400, seed=3)
    seen = {}
    for (tokens, tags), at in zip(corpus.sentences, corpus.ambiguous_at):
        assert len(tokens) == len(tags)
        if at < 0:
            continue
        word = tokens[at]
        assert tags[at] in AMBIGUOUS[word]
        # the words before the ambiguous one never depend on its sense
        seen.setdefault(tuple(tokens[:at]), set()).add(tags[at])
    assert any(len(senses) > 1 for senses in seen.values())
    assert {t for _, tags in corpus.sentences for t in tags} >= {"O", "PER", "LOC", "ORG"}
    assert set(CONTINUATIONS) == {"PER", "LOC", "ORG", "O"}


def test_bigru_beats_gru_on_ambiguous_tokens(tmp_path):
    out = io.StringIO()
    results = run_demo(tmp_path, train_size=600, test_size=200, epochs=3, batch_size=16, hidden_size=32,
                       seed=0, stream=out)
    gru, bigru = results["GRU"], results["BiGRU"]
    assert bigru["ambiguous"] > gru["ambiguous"] + 0.3
    assert gru["ambiguous"] < 0.75  # the left-to-right model cannot see the deciding words
    assert bigru["other"] > 0.9
    text = out.getvalue()
    assert "test accuracy" in text and "Teddy bears are on sale" in text  # table and examples
    assert f"{bigru['ambiguous']:.1%}" in text and f"{gru['ambiguous']:.1%}" in text
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("gru", "bigru"):
        log = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log] == [1, 2, 3]
        assert (tmp_path / name / "curves.png").stat().st_size > 1000
        assert (tmp_path / name / "best" / "model.safetensors").is_file()
        assert (tmp_path / name / "last" / "trainer_state.json").is_file()
