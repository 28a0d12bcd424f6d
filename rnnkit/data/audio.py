"""Audio to frames: WAV files read, log-mel or MFCC features, normalisation, SpecAugment masks,
and JSONL manifests of utterances (``{"path": ..., "label": ...}`` or ``{"path": ...,
"transcript": ...}``, paths relative to the manifest).

    feats = AudioFeatures(sample_rate=8000, kind="mfcc")
    x = feats(read_wav("0_george_0.wav", sample_rate=8000))     # (T, D) float32

Features, as a speech front end computes them (the math is the code):

* power spectrum ``P = |STFT(x)|^2`` with ``torch.stft`` (Hann window of ``win_length``
  samples, hop ``hop_length``, FFT size ``n_fft``, frames centred with reflect padding);
* mel energies ``M = P @ W^T`` with ``W`` (n_mels, n_fft/2+1) librosa's Slaney-normalised mel
  filterbank (``librosa.filters.mel``, htk=False), computed once per feature setting;
* ``logmel = log(M + 1e-6)``; ``mfcc = DCT-II(logmel)[:n_mfcc]`` with the orthonormal DCT
  (scipy's ``dct(type=2, norm="ortho")``, written as a matrix so that the batch stays in torch).

Why soundfile (libsndfile) rather than the standard library's ``wave``: ``wave`` reads only
integer PCM; soundfile also reads float WAV, FLAC and OGG, scales every subtype to [-1, 1]
the same way, and says what is wrong with a file it cannot read. Why librosa's filterbank: it
is the reference implementation most papers' features come from, and it installs without
torch (torchaudio would pin another torch). Both are imported lazily: ``rnnkit[audio]``.

Memory: a manifest is read one file at a time and only the features are kept (an FSDD
utterance of 0.4 s at 8 kHz: ~40 frames x 40 floats), never the waves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._io import iter_manifest
from .examples import SeriesExample

__all__ = ["AudioFeatures", "read_wav", "read_audio_manifest", "spec_augment", "normalize_utterance",
           "FEATURE_KINDS", "AudioExample"]

FEATURE_KINDS = ("logmel", "mfcc")
_EPS = 1e-6


def _needs(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"audio input needs {module}: pip install 'rnnkit[audio]'") from None


def read_wav(path: str | Path, *, sample_rate: int | None = None, where: str | None = None) -> np.ndarray:
    """Mono samples (N,) float32 in [-1, 1]; a multi-channel file is averaged. ``sample_rate``:
    the rate the file must have (no silent resampling: features of another rate mean another
    thing). ``where`` prefixes errors (``manifest:line``)."""
    sf = _needs("soundfile")
    where = where or str(path)
    if not Path(path).is_file():
        raise ValueError(f"{where}: no such audio file {str(path)!r}")
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError with libsndfile's reason
        raise ValueError(f"{where}: cannot read audio {str(path)!r} ({e})") from None
    if sample_rate is not None and rate != sample_rate:
        raise ValueError(f"{where}: {str(path)!r} has sample rate {rate} Hz; data.sample_rate is {sample_rate}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: {str(path)!r} holds no samples")
    return x.mean(axis=1)


class AudioFeatures:
    """Samples (N,) -> frames (T, D): ``kind`` logmel (D = n_mels) or mfcc (D = n_mfcc), at a hop
    of ``hop_length`` samples (T = 1 + N // hop_length)."""

    def __init__(self, *, sample_rate: int, kind: str = "logmel", n_fft: int = 256, win_length: int | None = None,
                 hop_length: int = 80, n_mels: int = 40, n_mfcc: int = 13, f_min: float = 0.0,
                 f_max: float | None = None) -> None:
        if kind not in FEATURE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FEATURE_KINDS)}; got {kind!r}")
        win_length = win_length or n_fft
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in 1..n_fft ({n_fft}); got {win_length}")
        if kind == "mfcc" and not 0 < n_mfcc <= n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels ({n_mels}); got {n_mfcc}")
        self.sample_rate, self.kind, self.n_fft, self.win_length = sample_rate, kind, n_fft, win_length
        self.hop_length, self.n_mels, self.n_mfcc = hop_length, n_mels, n_mfcc
        librosa_filters = _needs("librosa.filters")
        fb = librosa_filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=False)
        self.filterbank = torch.as_tensor(fb, dtype=torch.float32)  # (n_mels, n_fft/2+1)
        self.window = torch.hann_window(win_length)
        self.dct = dct_matrix(n_mels)[:n_mfcc] if kind == "mfcc" else None  # (n_mfcc, n_mels)

    @property
    def size(self) -> int:
        """D, features per frame."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def power(self, samples) -> Tensor:
        """|STFT|^2, (T, n_fft/2+1)."""
        x = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
        if x.numel() < self.n_fft // 2 + 1:  # reflect padding needs more samples than half a window
            x = torch.nn.functional.pad(x, (0, self.n_fft // 2 + 1 - x.numel()))
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return spec.abs().pow(2).T  # (T, F)

    def __call__(self, samples) -> Tensor:
        logmel = torch.log(self.power(samples) @ self.filterbank.T + _EPS)  # (T, n_mels)
        return logmel if self.dct is None else logmel @ self.dct.T           # (T, n_mfcc)


def dct_matrix(n: int) -> Tensor:
    """The orthonormal DCT-II as an (n, n) matrix C: ``C @ x`` equals scipy's ``dct(x, norm="ortho")``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.float()


def normalize_utterance(x: Tensor) -> Tensor:
    """Each feature to mean 0, std 1 over the frames of one utterance (cepstral mean and
    variance normalisation); a constant feature becomes 0."""
    std = x.std(0, unbiased=False, keepdim=True)
    return (x - x.mean(0, keepdim=True)) / std.clamp_min(1e-5)


def spec_augment(x: Tensor, lengths: Tensor, *, time_masks: int, time_width: int, freq_masks: int,
                 freq_width: int, generator: torch.Generator) -> Tensor:
    """SpecAugment (Park et al., 2019) without time warping: per utterance, ``freq_masks``
    bands of up to ``freq_width`` features and ``time_masks`` spans of up to ``time_width``
    frames (inside the utterance's own length) set to 0 -- the mean of normalised features.
    ``x`` (B, T, D) is not changed; a masked copy is returned."""
    B, T, D = x.shape
    keep = torch.ones(B, T, D, dtype=torch.bool)
    for b in range(B):
        L = int(lengths[b])
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, D - w + 1), (1,), generator=generator))
            keep[b, :L, f0:f0 + w] = False
        for _ in range(time_masks):
            w = min(int(torch.randint(0, time_width + 1, (1,), generator=generator)), L)
            t0 = int(torch.randint(0, max(1, L - w + 1), (1,), generator=generator))
            keep[b, t0:t0 + w, :] = False
    return x * keep.to(x.dtype)


@dataclass
class AudioExample(SeriesExample):
    """Frames (T, D) of one utterance with its class ``label`` or its ``transcript`` (one of
    them, or neither for prediction), and the file it came from."""

    transcript: str | None = None
    path: str | None = None


def read_audio_manifest(manifest: str | Path, features: AudioFeatures, *, normalize: str = "utterance",
                        target: str = "label", required: bool = True, encoding: str = "utf-8") -> list[AudioExample]:
    """The utterances a JSONL manifest lists, one ``{"path": ..., "label"|"transcript": ...}``
    per line (``path`` relative to the manifest's folder), as feature frames. ``target``:
    ``label`` or ``transcript``, the key every line must have (``required``; else read when
    present, as ``rnnkit predict`` reads its input). Errors name ``manifest:line``."""
    out = []
    for where, obj, path in iter_manifest(manifest, encoding):
        if target not in obj and required:
            raise ValueError(f'{where}: has no "{target}"; data.target is {target!r} (keys: {", ".join(sorted(obj))})')
        x = features(read_wav(path, sample_rate=features.sample_rate, where=where))
        if normalize == "utterance":
            x = normalize_utterance(x)
        value = str(obj[target]) if target in obj else None
        out.append(AudioExample(values=x.numpy(), label=value if target == "label" else None, where=where,
                                transcript=value if target == "transcript" else None, path=str(path)))
    if not out:
        raise ValueError(f"{manifest}: the manifest lists no utterances")
    return out
