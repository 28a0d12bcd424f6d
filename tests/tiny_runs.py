"""A tagger trained in a second on a tiny CoNLL file of the demo's sentences, for tests that
need a real checkpoint written by `rnnkit train` (export, inspect)."""

from rnnkit.config import parse_config
from rnnkit.run import train

ROWS = ([("Teddy", "B-PER"), ("Roosevelt", "I-PER"), ("was", "O"), ("president", "O")],
        [("Teddy", "O"), ("bears", "O"), ("are", "O"), ("on", "O"), ("sale", "O")])


def train_teddy_tagger(tmp_path, *, options: dict, data: dict | None = None, copies: int = 8, epochs: int = 2):
    """Writes tmp_path/ner.conll (the two sentences ``copies`` times), trains a SequenceTagger with
    ``options`` into tmp_path/run; returns the data file. ``data``: more data-section fields."""
    path = tmp_path / "ner.conll"
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in ROWS * copies) + "\n")
    train(parse_config({
        "data": {"format": "conll", "train": str(path), "dev": str(path), **(data or {})},
        "model": {"type": "SequenceTagger", "options": options},
        "trainer": {"epochs": epochs, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
                    "out_dir": str(tmp_path / "run")}}))
    return path
