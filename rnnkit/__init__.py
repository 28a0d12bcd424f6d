"""rnnkit: bidirectional and deep recurrent networks on PyTorch.

    import rnnkit
    bi = rnnkit.Bidirectional(rnnkit.GRU(64, 128), merge="concat")
    out, state = bi(x, lengths=lengths)      # out (B, T, 256); state.forward, state.backward
"""

from .cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell
from .layers import GRU, LSTM, RNN, Bidirectional, BiState, Recurrent, Stack
from .recurrence import Path
from .scan import MinGRU, MinLSTM

__version__ = "0.1.0"

__all__ = [
    "RNNCell", "GRUCell", "LSTMCell", "LayerNormGRUCell", "LayerNormLSTMCell",
    "Recurrent", "RNN", "GRU", "LSTM", "MinGRU", "MinLSTM", "Bidirectional", "BiState", "Stack", "Path",
]
