"""Task heads: one per sequence shape, each wrapping an input layer and an ``rnnkit.Stack``.

Every head exposes ``loss(batch) -> scalar`` and ``predict(batch)``, validates batches as
described in docs/contracts.md, and keeps a JSON-safe ``config`` such that
``type(head)(**head.config)`` rebuilds the same architecture. Heads never know which cell is
underneath: the cell is one of the ``encoder`` / ``decoder`` options.
"""

from ._common import ENCODER_DEFAULTS
from .attention import Attention, masked_softmax
from .bilm import BiLanguageModel, ContextualFeatures, ScalarMix
from .classifier import SequenceClassifier
from .crf import CRF, allowed_transitions
from .decoding import beam_search, greedy, sample
from .forecaster import Forecaster, make_windows
from .generator import Generator
from .language_model import LanguageModel, TiedAdaptiveSoftmax
from .registry import model_types, register
from .seq2seq import Bridge, Seq2Seq
from .tagger import CharFeatures, SequenceTagger
from .ctc import collapse, ctc_greedy, ctc_prefix_beam  # audio (issue #17)
from .transcriber import Transcriber

__all__ = [
    "SequenceClassifier", "SequenceTagger", "LanguageModel", "TiedAdaptiveSoftmax", "Seq2Seq", "Generator", "Forecaster",
    "BiLanguageModel", "Transcriber", "ctc_greedy", "ctc_prefix_beam", "collapse", "ContextualFeatures", "ScalarMix", "make_windows",
    "CRF", "allowed_transitions", "Attention", "masked_softmax", "Bridge", "CharFeatures",
    "greedy", "sample", "beam_search", "ENCODER_DEFAULTS", "register", "model_types",
]
