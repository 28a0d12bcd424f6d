"""Task heads: one per sequence shape, each wrapping an input layer and an ``rnnkit.Stack``.

Every head exposes ``loss(batch) -> scalar`` and ``predict(batch)``, validates batches as
described in docs/contracts.md, and keeps a JSON-safe ``config`` such that
``type(head)(**head.config)`` rebuilds the same architecture.
"""

from ._common import ENCODER_DEFAULTS
from .attention import Attention
from .classifier import SequenceClassifier
from .crf import CRF, allowed_transitions
from .tagger import SequenceTagger

__all__ = ["ENCODER_DEFAULTS", "Attention", "CRF", "allowed_transitions",
           "SequenceClassifier", "SequenceTagger"]
