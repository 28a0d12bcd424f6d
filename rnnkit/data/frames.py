"""Numeric frames: one array of shape (T, D) per utterance (.npy, .npz or .safetensors), listed
in a JSONL manifest with its per-frame labels, one label, or a transcript.

    {"path": "utt1.npy", "labels": ["sil", "sil", "speech", ...]}      one label per frame
    {"path": "utt2.npz", "labels": [[], ["a"], ["a", "b"], ...]}       a set of labels per frame
    {"path": "utt3.safetensors", "label": "seven"}                     one label per utterance
    {"path": "utt4.npy", "transcript": "seven"}                        a target text

Paths are relative to the manifest's folder. Every problem is reported as ``manifest:line: why``:
a missing file, an array that is not (T, D) with T >= 1, a D unlike the first file's (or
``feature_dim``), NaN or inf, a label count that is not the frame count. Each file is read when
its line is, and only its array (as float32) is kept in the example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import PathLike, iter_manifest

__all__ = ["FramesExample", "read_frames_manifest", "load_frames", "FRAME_TARGETS", "FRAME_SUFFIXES"]

FRAME_TARGETS = ("labels", "label", "transcript")
FRAME_SUFFIXES = (".npy", ".npz", ".safetensors")


@dataclass
class FramesExample:
    """Frames ``values`` (T, D) float32 and what they are labelled with, if anything: ``labels``
    one entry per frame (a label, or a list of labels), ``label`` one for the utterance, or a
    ``transcript``."""

    values: np.ndarray
    labels: list | None = None
    label: str | None = None
    transcript: str | None = None
    where: str = ""


def load_frames(path: PathLike, *, array_key: str | None = None, where: str = "") -> np.ndarray:
    """The array stored in one .npy / .npz / .safetensors file; an .npz or .safetensors file must
    hold exactly one array unless ``array_key`` names it."""
    path = Path(path)
    at = f"{where}: " if where else ""
    suffix = path.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise ValueError(f"{at}{path}: frames must be {', '.join(FRAME_SUFFIXES)} files; got {suffix or 'no suffix'!r}")
    if not path.is_file():
        raise ValueError(f"{at}{path}: no such file")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        else:
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
    except (ValueError, OSError) as e:
        raise ValueError(f"{at}{path}: cannot be read as {suffix} ({e})") from None
    if array_key is not None:
        if array_key not in arrays:
            raise ValueError(f"{at}{path}: has no array {array_key!r} (data.array_key); it holds "
                             f"{', '.join(sorted(arrays)) or 'none'}")
        return arrays[array_key]
    if len(arrays) != 1:
        raise ValueError(f"{at}{path}: holds {len(arrays)} arrays ({', '.join(sorted(arrays))}); name the one "
                         "to read with data.array_key")
    return next(iter(arrays.values()))


def _check_array(x: np.ndarray, path: Path, where: str, feature_dim: int | None) -> np.ndarray:
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{where}: {path.name}: frames must have shape (T, D) with T >= 1; got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{where}: {path.name}: frames must be real numbers; got dtype {x.dtype}")
    if feature_dim is not None and x.shape[1] != feature_dim:
        raise ValueError(f"{where}: {path.name}: frames have D = {x.shape[1]} features; expected D = {feature_dim}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        t, d = np.argwhere(bad)[0]
        raise ValueError(f"{where}: {path.name}: {int(bad.sum())} value(s) are NaN or inf (or overflow float32), "
                         f"first at frame {t}, feature {d}")
    return x


def _frame_labels(raw, T: int, where: str) -> list:
    if not isinstance(raw, list):
        raise ValueError(f'{where}: "labels" must be a list with one entry per frame; got {type(raw).__name__}')
    if len(raw) != T:
        raise ValueError(f'{where}: "labels" has {len(raw)} entries but the file has {T} frames')
    for t, item in enumerate(raw):
        ok = isinstance(item, str) or (isinstance(item, list) and all(isinstance(v, str) for v in item))
        if not ok:
            raise ValueError(f"{where}: labels[{t}] must be a label (string) or a list of labels; got {item!r}")
    return raw


def read_frames_manifest(manifest: PathLike, *, target: str | None, feature_dim: int | None = None,
                         array_key: str | None = None, encoding: str = "utf-8") -> list[FramesExample]:
    """The examples a manifest lists, each file checked and read in turn. ``target``: which
    field every line must have (``labels | label | transcript``; None: none is read). D is
    ``feature_dim`` when given, else the first file's."""
    if target is not None and target not in FRAME_TARGETS:
        raise ValueError(f"target must be one of {', '.join(FRAME_TARGETS)} or None; got {target!r}")
    manifest = Path(manifest)
    examples = []
    for where, obj, path in iter_manifest(manifest, encoding):
        x = _check_array(load_frames(path, array_key=array_key, where=where), path, where, feature_dim)
        feature_dim = x.shape[1]  # every later file must match the first
        ex = FramesExample(x, where=where)
        if target is not None:
            if target not in obj:
                raise ValueError(f'{where}: has no "{target}" (the model learns from {target}); keys: '
                                 f"{', '.join(sorted(obj))}")
            value = obj[target]
            if target == "labels":
                ex.labels = _frame_labels(value, len(x), where)
            elif not isinstance(value, str) or (target == "transcript" and not value.strip()):
                raise ValueError(f'{where}: "{target}" must be a non-empty string; got {value!r}')
            else:
                setattr(ex, target, value)
        examples.append(ex)
    if not examples:
        raise ValueError(f"{manifest}: the manifest lists no files")
    return examples
