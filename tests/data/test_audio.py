"""Audio features against references computed another way: numpy's DFT for the power spectrum,
the tone's frequency for the peak mel bin, scipy's DCT for MFCC; manifests' errors by line."""

import json

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

from rnnkit.data.audio import (AudioFeatures, dct_matrix, normalize_utterance, read_audio_manifest,  # noqa: E402
                               read_wav, spec_augment)

SR = 8000


def tone(freq: float, seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_power_matches_numpy_dft():
    feats = AudioFeatures(sample_rate=SR, n_fft=256, hop_length=80)
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    P = feats.power(x).numpy()
    padded = np.pad(x, 128, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)  # periodic Hann, as torch's
    ref = np.stack([np.abs(np.fft.rfft(padded[s:s + 256] * window)) ** 2
                    for s in range(0, len(padded) - 256 + 1, 80)])
    assert P.shape == ref.shape == (1 + 1000 // 80, 129)
    np.testing.assert_allclose(P, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_tone_peaks_in_its_mel_bin(freq):
    feats = AudioFeatures(sample_rate=SR, n_fft=256, n_mels=40)
    logmel = feats(tone(freq))
    import librosa

    centres = librosa.mel_frequencies(n_mels=42, fmin=0.0, fmax=SR / 2)[1:-1]  # filter centres
    expected = int(np.argmin(np.abs(centres - freq)))
    peaks = logmel[2:-2].argmax(-1)  # away from the padded edges
    assert (peaks - expected).abs().max() <= 1, (peaks.tolist(), expected)


def test_mfcc_is_scipy_dct_of_logmel():
    from scipy.fft import dct

    x = tone(440.0) + 0.01 * np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    logmel = AudioFeatures(sample_rate=SR, kind="logmel")(x).numpy()
    mfcc = AudioFeatures(sample_rate=SR, kind="mfcc", n_mfcc=13)(x).numpy()
    np.testing.assert_allclose(mfcc, dct(logmel, type=2, norm="ortho", axis=-1)[:, :13], rtol=1e-4, atol=1e-3)
    assert torch.allclose(dct_matrix(8) @ dct_matrix(8).T, torch.eye(8), atol=1e-5)  # orthonormal


def test_normalize_and_spec_augment():
    x = torch.randn(50, 6) * 3 + 2
    z = normalize_utterance(x)
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(6), atol=1e-4)
    batch = torch.ones(2, 30, 6)
    g = torch.Generator().manual_seed(0)
    out = spec_augment(batch, torch.tensor([30, 10]), time_masks=2, time_width=5, freq_masks=1, freq_width=2,
                       generator=g)
    assert torch.equal(batch, torch.ones(2, 30, 6))  # the input is kept
    assert out[1, 10:].eq(1).all()  # no time mask past the utterance's end
    assert (out == 0).any()


def test_manifest_reads_and_names_lines(tmp_path):
    sf.write(tmp_path / "a.wav", tone(500.0), SR)
    sf.write(tmp_path / "b16k.wav", tone(500.0, sr=16000), 16000)
    (tmp_path / "bad.wav").write_bytes(b"not a wave")
    feats = AudioFeatures(sample_rate=SR, kind="mfcc")
    good = tmp_path / "m.jsonl"
    good.write_text(json.dumps({"path": "a.wav", "label": "5"}) + "\n")
    [ex] = read_audio_manifest(good, feats)
    assert ex.label == "5" and ex.values.shape == (1 + 4000 // 80, 13)
    assert np.allclose(read_wav(tmp_path / "a.wav"), tone(500.0), atol=1e-4)
    for line, message in [({"path": "missing.wav", "label": "1"}, "no such audio file"),
                          ({"path": "b16k.wav", "label": "1"}, "sample rate 16000 Hz; data.sample_rate is 8000"),
                          ({"path": "bad.wav", "label": "1"}, "cannot read audio"),
                          ({"path": "a.wav"}, 'has no "label"')]:
        m = tmp_path / "bad.jsonl"
        m.write_text(json.dumps({"path": "a.wav", "label": "0"}) + "\n" + json.dumps(line) + "\n")
        with pytest.raises(ValueError, match=f"bad.jsonl:2: .*{message}"):
            read_audio_manifest(m, feats)
