"""The config schema: valid configs parse; every bad field is named with its line, value and
the allowed set; --set overrides reach any field."""

import pydantic
import pytest

from rnnkit.config import ConfigError, load_config, parse_config

GOOD = """\
name: tiny
data:
  format: conll
  train: train.txt
  dev_fraction: 0.2
model:
  type: SequenceTagger
  options:
    embedding_dim: 8
    encoder: {cell: gru, hidden_sizes: [8], bidirectional: true}
trainer:
  epochs: 2
  optimizer: {name: sgd, lr: 0.1, momentum: 0.5}
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_valid_config_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.data.format == "conll" and cfg.data.scheme == "conlleval" and cfg.data.dev_fraction == 0.2
    assert cfg.trainer.optimizer.momentum == 0.5 and cfg.trainer.scheduler.name == "none"
    assert cfg.model.options["encoder"]["bidirectional"] is True
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.trainer.epochs = 5


def test_unknown_field_names_file_line_and_allowed_fields(tmp_path):
    path = write(tmp_path, GOOD.replace("  epochs: 2", "  epoch: 2"))
    with pytest.raises(ConfigError, match=rf"{path}:12: trainer.epoch: unknown field \(got 2\); "
                                          r"allowed: epochs, batch_size, optimizer"):
        load_config(path)


def test_wrong_type_names_field_and_value(tmp_path):
    path = write(tmp_path, GOOD.replace("lr: 0.1", "lr: fast"))
    with pytest.raises(ConfigError, match=rf"{path}:13: trainer.optimizer.lr: Input should be a valid number.*\(got 'fast'\)"):
        load_config(path)


def test_choice_lists_the_allowed_values(tmp_path):
    path = write(tmp_path, GOOD.replace("name: sgd", "name: rmsprop"))
    with pytest.raises(ConfigError, match=r"trainer.optimizer.name: Input should be 'adam', 'adamw' or 'sgd' \(got 'rmsprop'\)"):
        load_config(path)


def test_unknown_data_format(tmp_path):
    path = write(tmp_path, GOOD.replace("format: conll", "format: xml"))
    with pytest.raises(ConfigError, match=r"data.format: must be one of conllu, conll, csv, tsv, jsonl, label_text, parallel, text, lm_text, ts; got 'xml'"):
        load_config(path)


def test_data_field_of_another_format(tmp_path):
    path = write(tmp_path, GOOD.replace("  dev_fraction: 0.2", "  bptt: 35"))
    with pytest.raises(ConfigError, match=rf"{path}:5: data.bptt: unknown field \(got 35\); allowed: .*token_column"):
        load_config(path)


def test_model_options_are_checked_against_the_head(tmp_path):
    path = write(tmp_path, GOOD.replace("embedding_dim: 8", "embedding_size: 8"))
    with pytest.raises(ConfigError, match=rf"{path}:9: model.options.embedding_size is not an option of "
                                          r"SequenceTagger; allowed: embedding_dim, encoder"):
        load_config(path)
    path = write(tmp_path, GOOD.replace("embedding_dim: 8", "num_tags: 8"))
    with pytest.raises(ConfigError, match=r"options.num_tags is set by rnnkit from the data"):
        load_config(path)


def test_model_must_fit_the_data_format(tmp_path):
    path = write(tmp_path, GOOD.replace("SequenceTagger", "LanguageModel").replace(
        "    embedding_dim: 8\n    encoder: {cell: gru, hidden_sizes: [8], bidirectional: true}\n", "    {}\n"))
    with pytest.raises(ConfigError, match=r"model.type LanguageModel cannot learn from data.format 'conll'; it takes lm_text"):
        load_config(path)


def test_missing_required_field(tmp_path):
    path = write(tmp_path, GOOD.replace("  train: train.txt\n", ""))
    with pytest.raises(ConfigError, match=r"data.train: required field is missing"):
        load_config(path)


def test_overrides_reach_nested_fields(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), overrides=[
        "trainer.epochs=7", "trainer.scheduler.name=cosine", "model.options.encoder.hidden_sizes=[4, 4]",
        "data.dev_fraction=null", "data.dev=dev.txt"])
    assert cfg.trainer.epochs == 7 and cfg.trainer.scheduler.name == "cosine"
    assert cfg.model.options["encoder"]["hidden_sizes"] == [4, 4] and cfg.data.dev == "dev.txt"


def test_bad_overrides(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"override 'trainer.epochs': expected FIELD=VALUE"):
        load_config(path, overrides=["trainer.epochs"])
    with pytest.raises(ConfigError, match=r"trainer.epochs: Input should be greater than or equal to 1 \(got 0\)"):
        load_config(path, overrides=["trainer.epochs=0"])
    with pytest.raises(ConfigError, match=r"trainer.epochs is 2, not a section"):
        load_config(path, overrides=["trainer.epochs.x=1"])


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, GOOD.replace("  epochs: 2", "  epochs: [2"))
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_config(path)


def test_dev_and_dev_fraction_exclude_each_other():
    raw = {"data": {"format": "conll", "train": "a", "dev": "b", "dev_fraction": 0.1},
           "model": {"type": "SequenceTagger"}}
    with pytest.raises(ConfigError, match=r"give either dev \('b'\) or dev_fraction \(0.1\), not both"):
        parse_config(raw)


def test_plateau_patience_cross_check():
    raw = {"data": {"format": "conll", "train": "a"}, "model": {"type": "SequenceTagger"},
           "trainer": {"patience": 1, "scheduler": {"name": "plateau", "patience": 2}}}
    with pytest.raises(ConfigError, match=r"trainer: patience \(1\) must exceed scheduler.patience \(2\)"):
        parse_config(raw)


@pytest.mark.parametrize("encoder, line, message", [
    ("{cell: gruu, hidden_sizes: [8]}", 10, r"model\.options\.encoder\.cell: cell must be one of rnn, gru, lstm"),
    ("{cell: gru, hidden_sizes: []}", 10, r"model\.options\.encoder\.hidden_sizes: hidden_sizes must name at least one"),
    ("{cell: gru, dropout: 1.5}", 10, r"model\.options\.encoder\.dropout: .*dropout"),
    ("{cell: gru, hiden_sizes: [8]}", 10, r"model\.options\.encoder\.hiden_sizes: encoder has unknown option"),
])
def test_encoder_errors_name_file_line_before_any_data_is_read(tmp_path, encoder, line, message):
    # train.txt does not exist: the error must come from the config, before reading data
    text = GOOD.replace("encoder: {cell: gru, hidden_sizes: [8], bidirectional: true}", f"encoder: {encoder}")
    with pytest.raises(ConfigError, match=rf"c\.yaml:{line}: {message}"):
        load_config(write(tmp_path, text))


def test_a_bidirectional_language_model_is_refused_at_its_line(tmp_path):
    text = ("data: {format: lm_text, train: x.txt}\nmodel:\n  type: LanguageModel\n  options:\n"
            "    encoder: {cell: lstm, bidirectional: true}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:5: model\.options\.encoder\.bidirectional: .*must be False"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("value", ["true", "2.5", "'8'"])
def test_counts_take_integers_only(tmp_path, value):
    with pytest.raises(ConfigError, match=r"c\.yaml:13: trainer\.batch_size: Input should be a valid integer"):
        load_config(write(tmp_path, GOOD.replace("  epochs: 2", f"  epochs: 2\n  batch_size: {value}")))


def test_text_formats_limit_the_input_length_by_default(tmp_path):
    from rnnkit.config import TEXT_MAX_LENGTH

    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.data.max_length == TEXT_MAX_LENGTH == 10_000 and cfg.data.truncate is False
    unlimited = load_config(write(tmp_path, GOOD.replace("  dev_fraction: 0.2", "  dev_fraction: 0.2\n  max_length: null")))
    assert unlimited.data.max_length is None
    series = parse_config({"data": {"format": "ts", "train": "x.ts"},
                           "model": {"type": "SequenceClassifier"}})
    assert series.data.max_length is None  # series may be long; no default limit
