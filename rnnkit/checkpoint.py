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
parsed, so a truncated or corrupted file is reported as such, by name. The manifest's structure
is checked field by field, and the model is first built on the ``meta`` device (no memory) and
compared, tensor by tensor, with the safetensors header -- shape, dtype, missing and unexpected
keys -- before it is built for real, so an edited ``model_config`` cannot make ``load`` allocate
what the file does not hold.

Saving survives being killed at any instant. ``save`` writes a hidden temporary folder
``.NAME.xxxxxxxx`` beside ``NAME``, fsyncs its files and the folder, then swaps it in by two
renames: ``NAME -> NAME.old``, temporary ``-> NAME``, and finally removes ``NAME.old``. Between
the two renames only ``NAME.old`` exists, so ``load``, ``read_manifest`` and ``load_state`` fall
back to ``NAME.old`` when ``NAME`` is missing (with a warning naming both). ``exists(path)`` tells
whether a checkpoint is there in either form -- use it, not ``Path.exists``, to ask whether a run
already lives in a folder. Temporary folders left by killed saves of ``NAME`` are removed by the
next save of ``NAME`` (so two processes must not save the same checkpoint at once).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["CheckpointError", "Checkpoint", "save", "load", "exists", "read_manifest", "file_sha256", "register",
           "model_types", "encode_state", "decode_state", "save_state", "load_state"]

FORMAT = "rnnkit-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
WEIGHTS = "model.safetensors"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"

class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupted or of another type."""


def register(cls: type) -> type:
    """``rnnkit.models.registry.register``: allow checkpoints of ``cls`` to be loaded."""
    from .models.registry import register as register_head

    return register_head(cls)


def model_types() -> dict[str, type]:
    """``rnnkit.models.registry.model_types``: name -> class of every model a checkpoint may hold."""
    from .models.registry import model_types as heads

    return heads()


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

def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _verify(directory: Path, name: str, manifest: dict) -> Path:
    path = directory / name
    want = manifest["files"].get(name)
    if want is None:
        raise CheckpointError(f"{directory / MANIFEST}: lists no file {name!r}; the checkpoint is incomplete")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (listed in {MANIFEST} with {want['bytes']} bytes)")
    size = path.stat().st_size
    if size != want["bytes"]:
        raise CheckpointError(f"{path}: truncated or overwritten: {size} bytes, {MANIFEST} records "
                              f"{want['bytes']}")
    if file_sha256(path) != want["sha256"]:
        raise CheckpointError(f"{path}: corrupted: its sha256 differs from the one in {MANIFEST}")
    return path


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def exists(path: str | os.PathLike) -> bool:
    """Whether a checkpoint lives at ``path``: the folder itself, or ``path.old`` that a save
    killed between its two renames left (``load`` reads that one then)."""
    path = Path(path)
    return path.is_dir() or _old(path).is_dir()


def _resolve(path: str | os.PathLike) -> Path:
    """``path``, or ``path.old`` when only that is left by a save killed mid-swap."""
    directory = Path(path)
    old = _old(directory)
    if not directory.exists() and old.is_dir():
        warnings.warn(f"{directory}: missing; loading {old} instead, the previous checkpoint that an "
                      "interrupted save left while swapping in the new one", RuntimeWarning, stacklevel=3)
        return old
    return directory


def _json_type(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {dict: "an object", list: "an array", str: "a string", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _check_manifest(manifest: dict, where: Path) -> None:
    """Refuse a manifest whose fields have the wrong JSON type, naming the field path."""
    def fail(field_path: str, why: str):
        raise CheckpointError(f"{where}: {field_path}: {why}")

    def need(obj: dict, key: str, field_path: str, kind: type, what: str, optional: bool = False):
        if key not in obj:
            if optional:
                return None
            fail(field_path, "missing")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            fail(field_path, f"must be {what}; got {_json_type(value)}")
        return value

    need(manifest, "model_type", "model_type", str, "a string (a model class name)")
    need(manifest, "model_config", "model_config", dict, "an object (the model's constructor arguments)")
    for key in ("vocabs", "extra"):
        need(manifest, key, key, dict, "an object", optional=True)
    for name, vocab in manifest.get("vocabs", {}).items():
        if not isinstance(vocab, dict):
            fail(f"vocabs.{name}", f"must be an object (a saved vocabulary); got {_json_type(vocab)}")
    files = need(manifest, "files", "files", dict, "an object mapping file names to {bytes, sha256}")
    for name, entry in files.items():
        if not isinstance(entry, dict):
            fail(f"files.{name}", f"must be an object {{bytes, sha256}}; got {_json_type(entry)}")
        size = need(entry, "bytes", f"files.{name}.bytes", int, "an integer >= 0")
        if size < 0:
            fail(f"files.{name}.bytes", f"must be an integer >= 0; got {size}")
        digest = need(entry, "sha256", f"files.{name}.sha256", str, "64 lowercase hex digits")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            fail(f"files.{name}.sha256", f"must be 64 lowercase hex digits; got {digest[:80]!r}")


def read_manifest(path: str | os.PathLike) -> dict:
    """The parsed ``checkpoint.json`` of a checkpoint directory, checked for format and
    structure. Reads ``path.old`` (with a warning) if only that is left by an interrupted save."""
    return _read_manifest(_resolve(path))


def _read_manifest(directory: Path) -> dict:
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
    except RecursionError:
        raise CheckpointError(f"{manifest_path}: nested too deeply to be an rnnkit manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: not an rnnkit checkpoint manifest (format must be "
                              f"{FORMAT!r}; got {manifest.get('format') if isinstance(manifest, dict) else manifest!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: format_version {manifest.get('format_version')!r} "
                              f"is not supported (this rnnkit reads {FORMAT_VERSION})")
    _check_manifest(manifest, manifest_path)
    return manifest


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk so a crash after the rename that publishes
    them cannot leave a checkpoint whose files are empty or missing."""
    if path.is_dir() and os.name == "nt":
        return  # Windows cannot open a folder for fsync; NTFS journals the rename itself
    fd = os.open(path, os.O_RDONLY if os.name != "nt" else os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems (e.g. certain network mounts) cannot fsync a folder; failing the
        # save there would leave only NAME.old behind, which is worse than a weaker guarantee.
        if not (path.is_dir() and e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)):
            raise
    finally:
        os.close(fd)


def _remove_stale_temps(target: Path) -> None:
    """Remove ``.NAME.xxxxxxxx`` folders that saves of ``NAME`` killed before their swap left.
    Only names ``tempfile.mkdtemp`` gives our prefix match, so other files are never touched."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}")
    for entry in target.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Swap a finished, fsynced checkpoint into place. Killed at any point, this leaves a
    complete checkpoint at ``target`` or, between the two renames only, at ``target.old``."""
    old = _old(target)
    if target.exists():
        if old.exists():  # left by an earlier save killed while removing it; target is complete
            shutil.rmtree(old)
        os.replace(target, old)
        _fsync(target.parent)
    # else: keep any target.old -- it is the last complete checkpoint until tmp is in place
    os.replace(tmp, target)
    _fsync(target.parent)
    if old.exists():
        # The new checkpoint is in place, so failing to remove the previous one must not fail the
        # save; a partial leftover is never read (target exists) and the next save removes it.
        shutil.rmtree(old, ignore_errors=True)


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
    _remove_stale_temps(target)  # before mkdtemp, so never the folder this save writes
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_model(model, str(tmp / WEIGHTS))  # handles tied (shared) weights
        manifest["files"][WEIGHTS] = _describe(tmp / WEIGHTS)
        if trainer_state is not None:
            for name in save_state(tmp, trainer_state):
                manifest["files"][name] = _describe(tmp / name)
        _write_json(tmp / MANIFEST, manifest)
        for name in (*manifest["files"], MANIFEST):
            _fsync(tmp / name)
        _fsync(tmp)
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
    """The trainer state saved with a checkpoint (raises if it has none). Reads ``path.old``
    (with a warning) if only that is left by an interrupted save."""
    from safetensors.torch import load_file

    directory = _resolve(path)
    manifest = _read_manifest(directory)
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


# ------------------------------------------------------------- weights against the config

# safetensors' dtype codes, named as torch names them (for messages and comparison).
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
           "U8": torch.uint8, "BOOL": torch.bool}
# A meta build may create temporaries (initialisers, CRF masks) besides the parameters: about 2x
# the parameters for rnnkit's heads, up to ~8x for a constrained CRF. Far above that, the config
# describes a model the file does not hold, and building even its shapes can take minutes.
_BUILD_ELEMENTS_FACTOR = 16
_BUILD_ELEMENTS_SLACK = 1 << 16
# Backstop for slow construction the counts cannot see; a real head builds on meta in well
# under a second.
_BUILD_SECONDS = 60.0


def _read_header(weights: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype code) from the safetensors header, without reading data."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type on a malformed header
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _check_config_counts(config: dict, header: dict, manifest_path: Path, weights: Path) -> None:
    """Refuse, before building anything, a config that describes more than the file can hold:
    more layers than the file has tensors (each layer has at least one), or a size, dimension
    or count larger than all the file's elements together (each is a dimension of some saved
    tensor). Keeps an edited config from hanging or exhausting memory in the constructor."""
    total = sum(_numel(shape) for shape, _ in header.values())
    layers, layer_fields = 0, []
    stack: list[tuple[str, Any]] = [("model_config", config)]  # no recursion: depth is untrusted
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                sub = f"{where}.{key}"
                if key == "hidden_sizes":
                    layers += len(item) if isinstance(item, list) else 1
                    layer_fields.append(sub)
                elif key == "num_layers" and isinstance(item, int) and not isinstance(item, bool):
                    layers += item
                    layer_fields.append(sub)
                if key.endswith(("_size", "_sizes", "_dim")) or key.startswith("num_"):
                    _check_sizes(sub, item, total, manifest_path, weights)
                stack.append((sub, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    if layers > len(header):
        raise CheckpointError(f"{manifest_path}: model_config has {layers} layers "
                              f"({', '.join(sorted(layer_fields))}), but {weights} holds only "
                              f"{len(header)} tensors; the config was edited or belongs to other weights")


def _check_sizes(where: str, value: Any, total: int, manifest_path: Path, weights: Path) -> None:
    pending = [(where, value)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and value > total:
            raise CheckpointError(f"{manifest_path}: {where} = {value} is larger than all {total} "
                                  f"elements {weights} holds; the config was edited or belongs to "
                                  "other weights")


class _BuildStopped(Exception):
    """Raised inside a model constructor to stop a meta build (not a ValueError, so a
    constructor's own ``except ValueError`` cannot swallow it)."""


class _BuildGuard(TorchFunctionMode):
    """Stops a meta build that creates far more tensor elements than the file's ``total``, or
    runs past ``_BUILD_SECONDS``. Once tripped, every further torch call raises again."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total, self.elements, self.reason = total, 0, None
        self.budget = _BUILD_ELEMENTS_FACTOR * total + _BUILD_ELEMENTS_SLACK
        self.deadline = time.monotonic() + _BUILD_SECONDS

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.reason is None:
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.elements += t.numel()
            if self.elements > self.budget:
                self.reason = (f"creates more than {self.budget} tensor elements (the file holds "
                               f"{self.total})")
            elif time.monotonic() > self.deadline:
                self.reason = f"took longer than {_BUILD_SECONDS:g} s to build on the meta device"
            else:
                return out
        raise _BuildStopped(self.reason)


def _build(cls: type, config: dict, manifest_path: Path, *, meta_total: int | None = None) -> nn.Module:
    """``cls(**config)``; with ``meta_total`` (the file's element count), on the meta device
    under a ``_BuildGuard``. A config the constructor refuses is a ``CheckpointError``."""
    kind = cls.__name__
    guard = _BuildGuard(meta_total) if meta_total is not None else None
    try:
        if guard is None:
            return cls(**config)
        with torch.device("meta"), guard:
            model = cls(**config)
    except _BuildStopped:
        pass
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{manifest_path}: model_config does not build a {kind}: {e}") from None
    except Exception as e:  # e.g. torch refusing a size that overflows; still the config's fault
        raise CheckpointError(f"{manifest_path}: model_config does not build a {kind}: "
                              f"{type(e).__name__}: {e}") from None
    if guard.reason is not None:  # also when the constructor swallowed _BuildStopped
        raise CheckpointError(f"{manifest_path}: model_config describes a {kind} that {guard.reason}; "
                              "the config was edited or belongs to other weights")
    return model


def _check_weights(model: nn.Module, header: dict, weights: Path, kind: str) -> None:
    """Every saved tensor of ``model`` (built on meta) against the file's header."""
    prefix = f"{weights}: weights do not match a {kind} built from model_config"
    # Tied tensors are one object under several names; save_model stores one of the names.
    groups: dict[int, list[str]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), []).append(name)
        tensors[id(t)] = t
    known = set()
    for key, names in groups.items():
        known.update(names)
        stored = [n for n in names if n in header]
        if not stored:
            raise CheckpointError(f"{prefix}: tensor {names[0]!r} "
                                  f"{tuple(tensors[key].shape)} is missing from the file")
        want_shape, want_dtype = tuple(tensors[key].shape), tensors[key].dtype
        for name in stored:
            shape, code = header[name]
            dtype = _DTYPES.get(code)
            if shape != want_shape or dtype != want_dtype:
                held = str(dtype).removeprefix("torch.") if dtype is not None else code
                raise CheckpointError(f"{prefix}: tensor {name!r}: model_config gives shape "
                                      f"{want_shape} {str(want_dtype).removeprefix('torch.')}, "
                                      f"the file holds {shape} {held}")
    unexpected = sorted(set(header) - known)
    if unexpected:
        raise CheckpointError(f"{prefix}: the file holds tensor(s) the model does not have: "
                              f"{', '.join(map(repr, unexpected[:5]))}"
                              f"{f' and {len(unexpected) - 5} more' if len(unexpected) > 5 else ''}")


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
    Reads ``path.old`` (with a warning) if only that is left by an interrupted save.
    """
    from safetensors.torch import load_model

    directory = _resolve(path)
    manifest = _read_manifest(directory)
    manifest_path = directory / MANIFEST
    kind = manifest["model_type"]
    if expected_type is not None:
        want = expected_type if isinstance(expected_type, str) else expected_type.__name__
        if kind != want:
            raise CheckpointError(f"{directory}: holds a {kind} model; expected {want}")
    types = model_types()
    if kind not in types:
        raise CheckpointError(f"{manifest_path}: model_type {kind!r} is not a known model; "
                              f"known: {', '.join(sorted(types)) or '(none registered)'}")
    weights = _verify(directory, WEIGHTS, manifest)
    config = manifest["model_config"]
    header = _read_header(weights)
    _check_config_counts(config, header, manifest_path, weights)
    total = sum(_numel(shape) for shape, _ in header.values())
    _check_weights(_build(types[kind], config, manifest_path, meta_total=total), header, weights, kind)
    # Shapes and dtypes now match the file, so the real build allocates what the file holds.
    model = _build(types[kind], config, manifest_path)
    try:
        load_model(model, str(weights), strict=True, device=str(map_location))
    except Exception as e:
        raise CheckpointError(f"{weights}: weights do not match a {kind} built from model_config ({e})") from None
    model.eval()
    return Checkpoint(model=model, vocabs=manifest.get("vocabs", {}), manifest=manifest, path=directory)
