"""``rnnkit demo``: why a tagger should read the words *after* a token.

Whether "Teddy" is a person can only be told from what follows it: "Teddy Roosevelt was a
president" (PER) against "Teddy bears are on sale" (O). The demo writes a corpus of such
sentences -- many ambiguous words, each with two senses picked at random, 50/50, and a sense
that only the words after it reveal; the words before it are neutral -- plus ordinary tokens
whose tag never changes. It then trains a unidirectional GRU tagger and a BiGRU tagger with the
same budget (epochs, batches, optimizer, about the same number of weights) and compares their
accuracy on the ambiguous tokens and overall. A left-to-right GRU has to tag "Teddy" before it
reads "bears", so on ambiguous tokens it can do no better than guessing a sense (about 50%);
the BiGRU reads both ways and gets them right.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ._plot import save_figure

__all__ = ["TAGS", "AMBIGUOUS", "make_corpus", "Corpus", "run_demo"]

TAGS = ["O", "PER", "LOC", "ORG"]

# Each ambiguous word has two senses; which one it has in a sentence is decided by the words
# that come after it (a continuation of that sense), never by the words before it.
AMBIGUOUS = {
    "Teddy": ("PER", "O"), "Jordan": ("PER", "LOC"), "Paris": ("PER", "LOC"),
    "Washington": ("PER", "LOC"), "Georgia": ("PER", "LOC"), "Florence": ("PER", "LOC"),
    "Victoria": ("PER", "LOC"), "Madison": ("PER", "LOC"), "Lincoln": ("PER", "LOC"),
    "Austin": ("PER", "LOC"), "Sydney": ("PER", "LOC"), "Virginia": ("PER", "LOC"),
    "Apple": ("ORG", "O"), "Jaguar": ("ORG", "O"), "Orange": ("ORG", "O"), "Shell": ("ORG", "O"),
    "Amazon": ("ORG", "LOC"), "Ford": ("PER", "ORG"), "Chase": ("PER", "ORG"),
    "Dell": ("PER", "ORG"), "Mercedes": ("PER", "ORG"), "Phoenix": ("LOC", "O"),
}

# Words that always carry the same tag, used in the same slot (ordinary named entities).
UNAMBIGUOUS = {"Maria": "PER", "John": "PER", "Aisha": "PER", "Texas": "LOC", "Berlin": "LOC",
               "Kenya": "LOC", "Google": "ORG", "Siemens": "ORG", "Toyota": "ORG"}

# Continuations per sense: the evidence, all of it after the ambiguous word. Word/TAG marks
# an entity inside a continuation; other words are O.
CONTINUATIONS = {
    "PER": ["Roosevelt/PER was a president", "smiled at the crowd", "said she was tired",
            "was born in Ohio/LOC", "wrote a new novel", "married a teacher", "won the election",
            "thanked her parents", "gave a long speech", "signed the letter"],
    "LOC": ["is a city on the coast", "has a warm climate", "lies on a wide river",
            "is crowded in summer", "has a busy harbour", "was flooded last spring",
            "is the capital of the region", "attracts many tourists", "has cheap hotels"],
    "ORG": ["shares fell sharply today", "hired new engineers", "announced record profits",
            "opened an office in Berlin/LOC", "sued a rival company", "released a new phone",
            "cut its prices", "reported weak sales", "moved its headquarters"],
    "O": ["bears are on sale", "pie is in the oven", "juice tastes sweet", "trees grow in the garden",
          "seeds are cheap this year", "cakes were baked for Maria/PER", "is on the kitchen table",
          "toys break easily"],
}

# Neutral openings: chosen independently of the sense, so they carry no evidence.
PREFIXES = ["", "", "Yesterday", "I think", "They said", "Everyone knows", "In the news ,",
            "Apparently", "Last week", "We heard that", "Of course", "Then"]

EXAMPLES = ["Teddy Roosevelt was a president", "Teddy bears are on sale",
            "Yesterday Paris has a warm climate", "Yesterday Paris smiled at the crowd",
            "I think Apple released a new phone", "I think Apple pie is in the oven"]


@dataclass
class Corpus:
    """Sentences as (tokens, tags), plus the position of the ambiguous word in each (or -1)."""

    sentences: list[tuple[list[str], list[str]]]
    ambiguous_at: list[int]


def _words(phrase: str) -> tuple[list[str], list[str]]:
    tokens, tags = [], []
    for w in phrase.split():
        word, _, tag = w.partition("/")
        tokens.append(word)
        tags.append(tag or "O")
    return tokens, tags


def make_corpus(n: int, *, seed: int, unambiguous_rate: float = 0.2) -> Corpus:
    """``n`` sentences: [neutral prefix] WORD continuation-of-its-sense [.]"""
    rng = random.Random(seed)
    sentences, positions = [], []
    names = list(AMBIGUOUS)
    for _ in range(n):
        prefix = _words(rng.choice(PREFIXES))
        if rng.random() < unambiguous_rate:
            word = rng.choice(list(UNAMBIGUOUS))
            sense, position = UNAMBIGUOUS[word], -1
        else:
            word = rng.choice(names)
            sense, position = rng.choice(AMBIGUOUS[word]), len(prefix[0])
        tail = _words(rng.choice(CONTINUATIONS[sense]))
        tokens = prefix[0] + [word] + tail[0]
        tags = prefix[1] + [sense] + tail[1]
        if rng.random() < 0.5:
            tokens, tags = tokens + ["."], tags + ["O"]
        sentences.append((tokens, tags))
        positions.append(position)
    return Corpus(sentences, positions)


# --------------------------------------------------------------------------- batching

def _vocabs(corpus: Corpus) -> dict:
    """Word and tag vocabularies in rnnkit.data's JSON form, so that `rnnkit predict` can read
    the demo's checkpoints like any trained with `rnnkit train`."""
    from .data import Vocab

    words = Vocab(specials=("<pad>", "<unk>")).fit(tokens for tokens, _ in corpus.sentences)
    return {"words": words.to_dict(), "labels": Vocab.for_labels(TAGS, name="tag", sort=False).to_dict()}


def _run_config(name: str, options: dict, trainer) -> dict:
    """The run as a `rnnkit train` config (stored in the checkpoints; the corpus is generated)."""
    return {"name": f"demo-{name.lower()}",
            "data": {"format": "conll", "train": "(generated by rnnkit demo)"},
            "model": {"type": "SequenceTagger", "options": options},
            "trainer": trainer.model_dump(mode="json")}


def _encode(tokens: list[str], index: dict[str, int]) -> list[int]:
    return [index.get(w, 1) for w in tokens]


def _batches(sentences, index: dict[str, int], batch_size: int) -> list[dict]:
    from .data.batching import IGNORE_INDEX

    tag_id = {t: i for i, t in enumerate(TAGS)}
    out = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        T = max(len(tokens) for tokens, _ in chunk)
        inputs = torch.zeros(len(chunk), T, dtype=torch.long)
        labels = torch.full((len(chunk), T), IGNORE_INDEX, dtype=torch.long)
        for b, (tokens, tags) in enumerate(chunk):
            inputs[b, :len(tokens)] = torch.tensor(_encode(tokens, index))
            labels[b, :len(tags)] = torch.tensor([tag_id[t] for t in tags])
        lengths = torch.tensor([len(tokens) for tokens, _ in chunk])
        out.append({"inputs": inputs, "lengths": lengths, "labels": labels})
    return out


def _accuracy(model, corpus: Corpus, index: dict[str, int]) -> dict:
    """Accuracy on the ambiguous tokens, on all other tokens and on all tokens."""
    amb = [0, 0]
    other = [0, 0]
    tag_id = {t: i for i, t in enumerate(TAGS)}
    batch_size = 256
    for start in range(0, len(corpus.sentences), batch_size):
        chunk = corpus.sentences[start:start + batch_size]
        predicted = model.predict(_batches(chunk, index, len(chunk))[0])
        for (tokens, tags), pred, at in zip(chunk, predicted, corpus.ambiguous_at[start:start + batch_size]):
            for i, (tag, p) in enumerate(zip(tags, pred)):
                bucket = amb if i == at else other
                bucket[0] += int(tag_id[tag] == p)
                bucket[1] += 1
    return {"ambiguous": amb[0] / amb[1], "other": other[0] / other[1],
            "all": (amb[0] + other[0]) / (amb[1] + other[1]), "n_ambiguous": amb[1],
            "n_other": other[1]}


# -------------------------------------------------------------------------------- run

class _EpochLine:
    """After each epoch: accuracy on the dev set's ambiguous tokens (kept for the comparison
    plot) and one short line of progress, readable in a log."""

    def __init__(self, label: str, dev: Corpus, index: dict[str, int], stream) -> None:
        self.label, self.dev, self.index, self.stream = label, dev, index, stream
        self.curve: list[float] = []
        self.train_seconds = 0.0  # the epochs' training steps only: not evaluation, checkpoints

    def on_epoch_end(self, trainer, record: dict) -> None:
        model = trainer.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            ambiguous = _accuracy(model, self.dev, self.index)["ambiguous"]
        model.train(was_training)
        self.curve.append(ambiguous)
        self.train_seconds += record["seconds"]
        dev = record.get("dev", {})
        print(f"  {self.label:6s} epoch {record['epoch']}/{trainer.config.epochs}  "
              f"train loss {record['train_loss']:.3f}  dev accuracy {dev.get('accuracy', float('nan')):.3f}, "
              f"on ambiguous tokens {ambiguous:.3f}  ({record['tokens_per_s']:,.0f} tok/s)",
              file=self.stream, flush=True)

    def on_train_end(self, trainer) -> None:
        pass


def _plot_comparison(curves: dict[str, list[float]], path: Path) -> Path:
    """Dev accuracy on the ambiguous tokens per epoch, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (two senses)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev accuracy, ambiguous tokens")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Tagging words that only later words disambiguate")
    return save_figure(fig, path)


def run_demo(out: str | Path = "runs/demo", *, train_size: int = 3000, test_size: int = 1000,
             epochs: int = 5, batch_size: int = 32, hidden_size: int = 64, embedding_dim: int = 32,
             lr: float = 5e-3, seed: int = 0, num_threads: int | None = 1, progress: bool = False,
             stream=None) -> dict:
    """Train a GRU and a BiGRU tagger on the generated corpus; return their accuracies.

    The BiGRU gets hidden_size * 5 // 8 units per direction, so that both models have about
    the same number of weights. ``num_threads=1``: these models are too small to gain from
    more CPU threads, and on a busy machine extra threads only wait for each other.
    """
    from .models import SequenceTagger
    from .training import TaggingMetrics, Trainer, TrainerConfig, seed_everything

    stream = stream if stream is not None else sys.stdout
    out = Path(out)
    train = make_corpus(train_size, seed=seed)
    dev = make_corpus(max(test_size // 4, 50), seed=seed + 1)
    test = make_corpus(test_size, seed=seed + 2)
    vocabs = _vocabs(train)
    itos = vocabs["words"]["itos"]
    index = {w: i for i, w in enumerate(itos)}
    train_batches = _batches(train.sentences, index, batch_size)
    dev_batches = _batches(dev.sentences, index, 256)
    bi_size = max(hidden_size * 5 // 8, 1)
    models = [("GRU", {"cell": "gru", "hidden_sizes": [hidden_size], "bidirectional": False}),
              ("BiGRU", {"cell": "gru", "hidden_sizes": [bi_size], "bidirectional": True})]
    print(f"rnnkit demo: {len(AMBIGUOUS)} ambiguous words (Teddy, Paris, Apple, ...) whose tag only the "
          f"words after them decide;\n{train_size} training sentences, {test_size} test sentences, tags "
          f"{', '.join(TAGS)}. Same budget for both models: {epochs} epochs, batch {batch_size}, "
          f"Adam lr {lr}.", file=stream, flush=True)
    # Build (or load) the compiled recurrence and its probe now, so that their one-time costs are
    # not counted as the first model's training time; the probe's verdicts are per thread count,
    # so with the threads the models train with.
    from . import recurrence

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    recurrence.prepare()
    results, trained, curves = {}, {}, {}
    for name, encoder in models:
        seed_everything(seed)
        model = SequenceTagger(vocab_size=len(itos), num_tags=len(TAGS), embedding_dim=embedding_dim,
                               encoder=encoder, tags=TAGS)
        config = TrainerConfig(epochs=epochs, batch_size=batch_size, seed=seed, progress=progress,
                               optimizer={"name": "adam", "lr": lr}, clip_grad_norm=5.0,
                               num_threads=num_threads, overwrite=True,
                               out_dir=str(out / name.lower()))
        line = _EpochLine(name, dev, index, stream)
        trainer = Trainer(model, config, train=train_batches, dev=dev_batches,
                          metrics=TaggingMetrics(TAGS), name=f"demo {name}",
                          vocabs=vocabs, extra={"config": _run_config(name, {"embedding_dim": embedding_dim,
                                                                               "encoder": encoder}, config)},
                          callbacks=[line])
        trainer.fit()
        model.eval()
        with torch.no_grad():
            acc = _accuracy(model, test, index)
        acc["params"] = sum(p.numel() for p in model.encoder.parameters())
        # The training steps' time: the first model's fit also pays one-off start-up costs
        # (imports, thread pools, the first checkpoint), which wall time would charge to it.
        acc["seconds"] = line.train_seconds
        results[name] = acc
        trained[name] = model
        curves[name] = line.curve
    _plot_comparison(curves, out / "comparison.png")
    _print_table(results, stream)
    print(f"\nsaved under {out}/: comparison.png (both models, ambiguous tokens per epoch); gru/ and "
          f"bigru/ each hold best/ and last/ checkpoints (safetensors + JSON), log.jsonl and "
          f"curves.png (learning curves)\n"
          f"tag your own sentences: echo \"Teddy bears are on sale\" | rnnkit predict {out}/bigru/best",
          file=stream)
    _print_examples(trained, index, stream)
    return results


def _print_table(results: dict, stream) -> None:
    n = next(iter(results.values()))
    print(f"\ntest accuracy ({n['n_ambiguous']} ambiguous tokens, {n['n_other']} other tokens):",
          file=stream)
    print(f"  {'model':7s} {'encoder weights':>15s} {'ambiguous':>10s} {'other':>8s} {'all':>8s} "
          f"{'train time':>11s}", file=stream)
    for name, r in results.items():
        print(f"  {name:7s} {r['params']:>15,d} {r['ambiguous']:>10.1%} {r['other']:>8.1%} "
              f"{r['all']:>8.1%} {r['seconds']:>10.1f}s", file=stream)
    print("  (each ambiguous word takes each of its two senses half of the time: a model that cannot "
          "see\n   the words after it is at chance, about 50%, on the ambiguous tokens)", file=stream)


def _print_examples(models: dict, index: dict[str, int], stream) -> None:
    print("\nexample sentences (tag per word; the ambiguous word is first or after a neutral opening):",
          file=stream)
    for text in EXAMPLES:
        tokens = text.split()
        batch = {"inputs": torch.tensor([_encode(tokens, index)]), "lengths": torch.tensor([len(tokens)])}
        rows = {name: [TAGS[i] for i in m.predict(batch)[0]] for name, m in models.items()}
        widths = [max(len(w), *(len(r[i]) for r in rows.values())) for i, w in enumerate(tokens)]
        print("  " + f"{'':6s} " + " ".join(w.ljust(n) for w, n in zip(tokens, widths)), file=stream)
        for name, tags in rows.items():
            print("  " + f"{name:6s} " + " ".join(t.ljust(n) for t, n in zip(tags, widths)), file=stream)
        print(file=stream)
