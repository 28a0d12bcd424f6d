"""`pip install rnnkit` gives the layers and task heads without the train extra: nothing they
import may need pyyaml, pydantic, regex, tqdm, matplotlib, scikit-learn, seqeval or sacrebleu."""

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

TRAIN_EXTRA = ("yaml", "pydantic", "regex", "tqdm", "matplotlib", "sklearn", "seqeval", "sacrebleu")


def without_the_train_extra(tmp_path) -> dict:
    """An environment in which the train extra's packages are absent, as in a fresh
    `pip install rnnkit`: site-packages minus them (linked one by one), no .pth files (python
    -S), the repository on the path."""
    packages = Path(sysconfig.get_paths()["purelib"])
    view = tmp_path / "site"
    view.mkdir()
    for entry in packages.iterdir():
        top = entry.name.split(".")[0].split("-")[0]
        if top in TRAIN_EXTRA or entry.suffix == ".pth" or top == "__editable__":
            continue
        (view / entry.name).symlink_to(entry)
    root = Path(__file__).resolve().parents[1]
    # RNNKIT_COMPILED=0: torch seen through the links is another install to the build key (a rebuild)
    return {"PYTHONPATH": f"{root}{os.pathsep}{view}", "RNNKIT_COMPILED": "0", "PATH": os.environ.get("PATH", "")}


def test_layers_heads_and_checkpoints_work_without_the_train_extra(tmp_path):
    script = textwrap.dedent(f"""
        import importlib.util
        for name in {TRAIN_EXTRA!r}:
            assert importlib.util.find_spec(name) is None, name  # really absent
        import torch, rnnkit
        from rnnkit import checkpoint
        from rnnkit.models import LanguageModel, Seq2Seq, SequenceClassifier, SequenceTagger

        batch = {{"inputs": torch.randint(1, 20, (2, 5)), "lengths": torch.tensor([5, 3])}}
        tagger = SequenceTagger(vocab_size=20, num_tags=3, output="crf",
                                encoder={{"cell": "gru", "hidden_sizes": [8], "bidirectional": True}})
        checkpoint.save({str(tmp_path / "ck")!r}, tagger)
        assert checkpoint.load({str(tmp_path / "ck")!r}).model.predict(batch) == tagger.predict(batch)
        SequenceClassifier(num_classes=2, vocab_size=20).predict(batch)
        LanguageModel(vocab_size=20, eos_id=3).generate(batch, max_new_tokens=2)
        Seq2Seq(source_vocab_size=20, target_vocab_size=20).predict(batch)
        from rnnkit.cli import main
        assert main(["demo"]) == 2  # the CLI says which extra it needs
    """)
    done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=300,
                          env=without_the_train_extra(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the command line needs the packages of rnnkit[train]" in done.stderr
