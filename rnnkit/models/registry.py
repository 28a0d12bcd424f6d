"""The heads a checkpoint may hold, by class name: rnnkit's own, and any ``register``-ed class.

A checkpoint names its model's class; loading looks the name up here and never imports a
class from a string, so a checkpoint cannot make rnnkit run code of its choosing.
"""

from __future__ import annotations

from torch import nn

__all__ = ["register", "model_types", "HEADS"]

HEADS = ("SequenceClassifier", "SequenceTagger", "LanguageModel", "Seq2Seq", "Generator", "Forecaster",
         "BiLanguageModel", "Transcriber")
_REGISTERED: dict[str, type] = {}


def register(cls: type) -> type:
    """Allow checkpoints of ``cls`` (an nn.Module whose ``config`` rebuilds it as
    ``cls(**config)``) to be loaded. Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register takes an nn.Module subclass; got {cls!r}")
    _REGISTERED[cls.__name__] = cls
    return cls


def model_types() -> dict[str, type]:
    """Name -> class of every model a checkpoint may hold."""
    from .. import models  # the package this module is part of, imported in full by now

    return {**{name: getattr(models, name) for name in HEADS}, **_REGISTERED}
