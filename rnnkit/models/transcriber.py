"""Frames to a symbol sequence with CTC: speech to characters or digits.

    inputs (B, T, D) frames -> Stack stage 1 -> [concat frame pairs (B, T/2, 2H)] -> stage 2 ...
    -> linear (B, T', S) -> log_softmax -> CTC loss against targets (B, U)

S = ``num_symbols`` includes the blank, id 0 (``torch.nn.CTCLoss``'s default). ``pyramid`` = p
halves the frame rate after each of the first p encoder layers by concatenating pairs of
frames (Chan et al., 2016, Listen, Attend and Spell): fewer steps for the upper layers and
the output, as long as every target still fits (CTC needs T' >= U, plus one frame between
repeated symbols). An odd last frame is dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import build_stack, check_batch, check_choice, check_int, check_rate, check_values, encoder_config
from .ctc import ctc_greedy, ctc_prefix_beam

__all__ = ["Transcriber", "DECODINGS"]

DECODINGS = ("greedy", "beam")


class Transcriber(nn.Module):
    """Label frame sequences with symbol sequences, trained with CTC.

    Args (keyword-only):
        input_size: D, features per frame.
        num_symbols: S, the blank (id 0) and the alphabet.
        encoder: ``rnnkit.Stack`` options (see ``models.ENCODER_DEFAULTS``), e.g. a BiLSTM.
        pyramid: p, encoder layers after which pairs of frames are concatenated (0 <= p < layers).
        dropout: on the encoder's output.
        decoding: ``greedy`` (best path) or ``beam`` (prefix beam search of ``beam_size``).
        max_length: longest input accepted (None: any).

    ``forward(batch)`` gives log-probabilities (B, T', S) and output lengths (B,); ``loss(batch)``
    the CTC loss per target symbol (``batch["targets"]`` (B, U) padded, ``target_lengths`` (B,));
    ``predict(batch)`` one list of symbol ids per sequence.
    """

    def __init__(self, *, input_size: int, num_symbols: int, encoder: dict | None = None, pyramid: int = 0,
                 dropout: float = 0.0, decoding: str = "greedy", beam_size: int = 8,
                 max_length: int | None = None) -> None:
        super().__init__()
        check_int("input_size", input_size)
        check_int("num_symbols", num_symbols, low=2)
        check_int("pyramid", pyramid, low=0)
        check_rate("dropout", dropout)
        check_choice("decoding", decoding, DECODINGS)
        check_int("beam_size", beam_size)
        check_int("max_length", max_length, optional=True)
        encoder = encoder_config(encoder)
        L = len(encoder["hidden_sizes"])
        if pyramid >= L:
            raise ValueError(f"pyramid must be below the number of encoder layers ({L}); got {pyramid}")
        self.config = dict(input_size=input_size, num_symbols=num_symbols, encoder=encoder, pyramid=pyramid,
                           dropout=dropout, decoding=decoding, beam_size=beam_size, max_length=max_length)
        self.input_size, self.num_symbols, self.pyramid = input_size, num_symbols, pyramid
        self.decoding, self.beam_size, self.max_length = decoding, beam_size, max_length
        # stages: one layer each up to the last halving, then the remaining layers as one Stack
        bounds = list(range(pyramid + 1)) + [L]
        self.stages = nn.ModuleList()
        width = input_size
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = dict(encoder, hidden_sizes=encoder["hidden_sizes"][a:b])
            if isinstance(encoder["bidirectional"], list):
                part["bidirectional"] = encoder["bidirectional"][a:b]
            stage = build_stack(2 * width if i > 0 else width, part)
            self.stages.append(stage)
            width = stage.output_size
        self.drop = nn.Dropout(dropout)
        self.output = nn.Linear(width, num_symbols)

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """T' per sequence: each halving floors."""
        return torch.div(lengths, 2 ** self.pyramid, rounding_mode="floor")

    def forward(self, batch: dict) -> tuple[Tensor, Tensor]:
        x, lengths = check_values(batch, input_size=self.input_size, max_length=self.max_length,
                                  device=self.device, dtype=self.output.weight.dtype)
        if int(lengths.min()) < 2 ** self.pyramid:
            raise ValueError(f"pyramid {self.pyramid} needs at least {2 ** self.pyramid} frames per input; "
                             f"the shortest has {int(lengths.min())}")
        h = x
        for i, stage in enumerate(self.stages):
            if i > 0:  # (B, T, H) -> (B, T/2, 2H): frames 2t and 2t+1 side by side
                B, T, H = h.shape
                h = h[:, :T - T % 2].reshape(B, T // 2, 2 * H)
                lengths = torch.div(lengths, 2, rounding_mode="floor")
            h, _ = stage(h, lengths=lengths)
        return F.log_softmax(self.output(self.drop(h)), dim=-1), lengths  # (B, T', S)

    def _targets(self, batch: dict, B: int) -> tuple[Tensor, Tensor]:
        check_batch(batch, ("targets", "target_lengths"))
        y, n = batch["targets"], batch["target_lengths"]
        if y.dim() != 2 or y.shape[0] != B or y.is_floating_point() or n.shape != (B,):
            raise ValueError(f"batch['targets'] must be symbol ids (B, U) with B = {B} and target_lengths (B,); "
                             f"got {tuple(y.shape)} {y.dtype} and {tuple(n.shape)}")
        real = torch.arange(y.shape[1])[None, :] < n[:, None].cpu()
        if real.any() and (int(y[real].min()) < 1 or int(y[real].max()) >= self.num_symbols):
            raise ValueError(f"batch['targets'] must hold symbol ids in 1..{self.num_symbols - 1} (0 is the blank); "
                             f"got {int(y[real].min())}..{int(y[real].max())}")
        return y.to(self.device), n.to(self.device)

    def loss(self, batch: dict) -> Tensor:
        """CTC negative log-likelihood summed over the batch, divided by the target symbols."""
        log_probs, out_lengths = self(batch)
        y, n = self._targets(batch, log_probs.shape[0])
        # a repeated symbol needs a blank between its copies: U + repeats frames at least
        U = y.shape[1]
        repeats = (y[:, 1:] == y[:, :-1]) & (torch.arange(1, U, device=y.device)[None, :] < n[:, None])
        need = n + repeats.sum(1)
        short = (need > out_lengths).nonzero().flatten()
        if len(short):
            b = int(short[0])
            raise ValueError(f"sequence {b} of the batch has {int(out_lengths[b])} output frames for a target that "
                             f"needs {int(need[b])}: CTC cannot align it (lower pyramid, or a smaller hop_length)")
        nll = F.ctc_loss(log_probs.transpose(0, 1), y, out_lengths, n, blank=0, reduction="sum")
        return nll / n.sum().clamp_min(1)

    def loss_count(self, batch: dict) -> int:
        """The target symbols ``loss`` averages over (distributed runs weight each process by it)."""
        return int(batch["target_lengths"].sum())

    @torch.no_grad()
    def predict(self, batch: dict) -> list[list[int]]:
        """One symbol-id list per sequence (blank never included)."""
        log_probs, lengths = self(batch)
        if self.decoding == "greedy":
            return ctc_greedy(log_probs, lengths)
        return ctc_prefix_beam(log_probs, lengths, beam_size=self.beam_size)
