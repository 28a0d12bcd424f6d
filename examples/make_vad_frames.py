"""Per-frame voice activity data for examples/vad_frames.yaml: "is this 10 ms frame inside a
spoken digit?", built from the Free Spoken Digit Dataset (8 kHz 16-bit mono WAV).

Each utterance joins 4 recordings with random gaps (0.1-0.6 s) of silence or faint noise;
every recording is trimmed to its spoken part first (frames within 35 dB of its loudest), so
the label "speech" covers the digit, not the recording's own leading or trailing silence.
Official split by take: 0-4 test, 5-49 train (here 5-9 dev, 10-49 train).

The features are this example's own simple ones -- 30 log band energies of a 25 ms Hann
window every 10 ms (numpy FFT, 30 equal bands over 0-4 kHz) -- not an audio front end: the
toolkit's audio features are being built separately (rnnkit/data/audio.py).

    python examples/make_vad_frames.py [--fsdd DIR] [--out runs/data/vad] [--seed 0]

Writes OUT/{train,dev,test}/NNNNN.npy (T, 30) float32 and OUT/{train,dev,test}.jsonl with
{"path": ..., "labels": [[] or ["speech"] per frame]}.
"""

from __future__ import annotations

import argparse
import json
import wave
from pathlib import Path

import numpy as np

RATE, HOP, WIN, NFFT, BANDS = 8000, 80, 200, 256, 30
PER_UTTERANCE = 4


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected {RATE} Hz 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def log_bands(x: np.ndarray) -> np.ndarray:
    """(T, 30) log band energies, frame t centred at sample t * HOP."""
    pad = np.pad(x, (WIN // 2, WIN // 2))
    T = len(x) // HOP
    idx = np.arange(T)[:, None] * HOP + np.arange(WIN)[None, :]
    power = np.abs(np.fft.rfft(pad[idx] * np.hanning(WIN), NFFT)) ** 2  # (T, NFFT/2+1)
    edges = np.linspace(1, power.shape[1], BANDS + 1).astype(int)
    bands = np.stack([power[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    return np.log(bands + 1e-8).astype(np.float32)


def trim(x: np.ndarray) -> np.ndarray:
    energy = np.array([np.sum(x[i:i + HOP] ** 2) for i in range(0, len(x) - HOP + 1, HOP)]) + 1e-12
    loud = np.nonzero(10 * np.log10(energy / energy.max()) > -35)[0]
    return x[loud[0] * HOP:(loud[-1] + 1) * HOP]


def utterance(paths: list[Path], rng: np.random.Generator) -> tuple[np.ndarray, list[list[str]]]:
    parts, speech = [], []
    for p in paths:
        gap = np.zeros(int(rng.uniform(0.1, 0.6) * RATE), np.float32)
        if rng.random() < 0.5:  # faint noise instead of digital silence
            gap += rng.normal(0, rng.uniform(1e-4, 3e-3), len(gap)).astype(np.float32)
        digit = trim(read_wav(p))
        parts += [gap, digit]
        speech += [np.zeros(len(gap), bool), np.ones(len(digit), bool)]
    tail = np.zeros(int(rng.uniform(0.1, 0.6) * RATE), np.float32)
    x, on = np.concatenate(parts + [tail]), np.concatenate(speech + [np.zeros(len(tail), bool)])
    x = x + rng.normal(0, 1e-4, len(x)).astype(np.float32)  # a floor, so no band is log(0)
    feats = log_bands(x)
    centre = np.minimum(np.arange(len(feats)) * HOP, len(on) - 1)
    return feats, [["speech"] if on[c] else [] for c in centre]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsdd", default="/work/shared/datasets/fsdd/recordings")
    ap.add_argument("--out", default="runs/data/vad")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    files = sorted(Path(args.fsdd).glob("*.wav"))
    take = lambda p: int(p.stem.split("_")[2])  # noqa: E731 -- digit_speaker_take.wav
    splits = {"test": [p for p in files if take(p) <= 4], "dev": [p for p in files if 5 <= take(p) <= 9],
              "train": [p for p in files if take(p) >= 10]}
    out = Path(args.out)
    for name, paths in splits.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        paths = [paths[i] for i in rng.permutation(len(paths))]
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as manifest:
            for n, start in enumerate(range(0, len(paths) - PER_UTTERANCE + 1, PER_UTTERANCE)):
                feats, labels = utterance(paths[start:start + PER_UTTERANCE], rng)
                np.save(out / name / f"{n:05d}.npy", feats)
                manifest.write(json.dumps({"path": f"{name}/{n:05d}.npy", "labels": labels}) + "\n")
        print(f"{name}: {n + 1} utterances of {PER_UTTERANCE} digits from {len(paths)} recordings")


if __name__ == "__main__":
    main()
