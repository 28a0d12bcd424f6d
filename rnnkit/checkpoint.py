"""Checkpoints without pickle: weights in safetensors, everything else in JSON.

A checkpoint is a directory::

    checkpoint.json            format, model type, the head's ``config``, vocabularies,
                               size and sha256 of every file below, free ``extra`` (metrics...)
    model.safetensors          the weights
    trainer_state.json         (optional) epoch, step, optimizer hyper-parameters, scheduler,
    trainer_state.safetensors  RNG states and optimizer moments -- for exact resume

Loading reads JSON and tensors only; the model class is looked up by name in a registry of
rnnkit's task heads (and classes passed to ``register``), never imported from a string, so
loading a checkpoint never runs code from it. Sizes and hashes are checked before anything is
parsed, so a truncated or corrupted file is reported as such, by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["CheckpointError", "Checkpoint", "save", "load", "read_manifest", "register",
           "model_types", "encode_state", "decode_state", "save_state", "load_state"]

FORMAT = "rnnkit-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
WEIGHTS = "model.safetensors"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"

_REGISTRY: dict[str, type] = {}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupted or of another type."""


def register(cls: type) -> type:
    """Allow checkpoints of ``cls`` (an nn.Module whose ``config`` rebuilds it) to be loaded.
    Usable as a class decorator. rnnkit's own heads are registered on first use."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register takes an nn.Module subclass; got {cls!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def model_types() -> dict[str, type]:
    """Name -> class of every model a checkpoint may hold."""
    try:
        from . import models
    except ImportError:  # the heads package is optional for the layers-only install
        models = None
    if models is not None:
        for name in getattr(models, "__all__", ()):
            obj = getattr(models, name, None)
            if isinstance(obj, type) and issubclass(obj, nn.Module) and hasattr(obj, "loss"):
                _REGISTRY.setdefault(name, obj)
    return dict(_REGISTRY)


# ------------------------------------------------------------------ JSON + tensor codec

def encode_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """Split a nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) into
    JSON and a flat dict of tensors. Non-string dict keys and tuples are tagged so that
    ``decode_state`` restores them exactly."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_state(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, encode_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint: only "
                    "tensors, arrays, numbers, strings, lists, tuples and dicts are allowed")


def decode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: decode_state(v, tensors) for k, v in obj["__items__"]}
        return {k: decode_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    return obj


# --------------------------------------------------------------------------- files

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _verify(directory: Path, name: str, manifest: dict) -> Path:
    path = directory / name
    want = manifest.get("files", {}).get(name)
    if want is None:
        raise CheckpointError(f"{directory / MANIFEST}: lists no file {name!r}; the checkpoint is incomplete")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (listed in {MANIFEST} with {want['bytes']} bytes)")
    size = path.stat().st_size
    if size != want["bytes"]:
        raise CheckpointError(f"{path}: truncated or overwritten: {size} bytes, {MANIFEST} records "
                              f"{want['bytes']}")
    if _sha256(path) != want["sha256"]:
        raise CheckpointError(f"{path}: corrupted: its sha256 differs from the one in {MANIFEST}")
    return path


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_manifest(path: str | os.PathLike) -> dict:
    """The parsed ``checkpoint.json`` of a checkpoint directory, checked for format."""
    directory = Path(path)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (expected a folder with "
                              f"{MANIFEST} and {WEIGHTS})")
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing; {directory} is not an rnnkit checkpoint")
    text = manifest_path.read_text(encoding="utf-8", errors="replace")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{manifest_path}:{e.lineno}: not valid JSON ({e.msg}); the file is "
                              "truncated or corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: not an rnnkit checkpoint manifest (format must be "
                              f"{FORMAT!r}; got {manifest.get('format') if isinstance(manifest, dict) else manifest!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: format_version {manifest.get('format_version')!r} "
                              f"is not supported (this rnnkit reads {FORMAT_VERSION})")
    return manifest


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished checkpoint into place, so a crash mid-save never leaves a broken one."""
    old = None
    if target.exists():
        old = target.with_name(target.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old)


# ---------------------------------------------------------------------------- save / load

def save(path: str | os.PathLike, model: nn.Module, *, vocabs: dict | None = None,
         extra: dict | None = None, trainer_state: dict | None = None) -> Path:
    """Write ``model`` (weights and its ``config``), JSON ``vocabs`` (e.g. ``Vocabulary.to_dict``
    outputs by name), ``extra`` JSON and optionally a trainer state (see ``save_state``)."""
    from safetensors.torch import save_model

    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(model).__name__} has no dict `config`; a checkpoint stores the config "
                        "that rebuilds the model as type(model)(**config)")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "model_type": type(model).__name__, "model_config": config,
                "vocabs": vocabs or {}, "extra": extra or {}, "files": {}}
    try:
        json.dumps(manifest)
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint config, vocabs and extra must be JSON-safe: {e}") from None
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_model(model, str(tmp / WEIGHTS))  # handles tied (shared) weights
        manifest["files"][WEIGHTS] = _describe(tmp / WEIGHTS)
        if trainer_state is not None:
            for name in save_state(tmp, trainer_state):
                manifest["files"][name] = _describe(tmp / name)
        _write_json(tmp / MANIFEST, manifest)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_state(directory: Path, state: dict) -> list[str]:
    """Write a nested trainer state as JSON plus safetensors; returns the file names."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(state, tensors)
    _write_json(directory / STATE_JSON, encoded)
    save_file(tensors, str(directory / STATE_TENSORS))
    return [STATE_JSON, STATE_TENSORS]


def load_state(path: str | os.PathLike) -> dict:
    """The trainer state saved with a checkpoint (raises if it has none)."""
    from safetensors.torch import load_file

    directory = Path(path)
    manifest = read_manifest(directory)
    if STATE_JSON not in manifest["files"]:
        raise CheckpointError(f"{directory}: holds no trainer state (only a 'last' checkpoint "
                              "written during training can be resumed)")
    encoded = json.loads(_verify(directory, STATE_JSON, manifest).read_text(encoding="utf-8"))
    tensors = _load_tensors(load_file, _verify(directory, STATE_TENSORS, manifest))
    return decode_state(encoded, tensors)


def _load_tensors(loader, path: Path):
    try:
        return loader(str(path))
    except Exception as e:  # safetensors raises its own error type on a malformed header
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its vocabularies and the manifest."""

    model: nn.Module
    vocabs: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def extra(self) -> dict:
        return self.manifest.get("extra", {})


def load(path: str | os.PathLike, *, expected_type: str | type | None = None,
         map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint directory and load its weights.

    ``expected_type`` (a class or class name) makes a checkpoint of another model type an error.
    """
    from safetensors.torch import load_model

    directory = Path(path)
    manifest = read_manifest(directory)
    kind = manifest.get("model_type")
    if expected_type is not None:
        want = expected_type if isinstance(expected_type, str) else expected_type.__name__
        if kind != want:
            raise CheckpointError(f"{directory}: holds a {kind} model; expected {want}")
    types = model_types()
    if kind not in types:
        raise CheckpointError(f"{directory / MANIFEST}: model_type {kind!r} is not a known model; "
                              f"known: {', '.join(sorted(types)) or '(none registered)'}")
    weights = _verify(directory, WEIGHTS, manifest)
    config = manifest.get("model_config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / MANIFEST}: model_config must be a JSON object; got {config!r}")
    try:
        model = types[kind](**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{directory / MANIFEST}: model_config does not build a {kind}: {e}") from None
    try:
        load_model(model, str(weights), strict=True, device=str(map_location))
    except Exception as e:
        raise CheckpointError(f"{weights}: weights do not match a {kind} built from model_config ({e})") from None
    model.eval()
    return Checkpoint(model=model, vocabs=manifest.get("vocabs", {}), manifest=manifest, path=directory)
