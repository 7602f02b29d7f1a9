"""``fw.save`` / ``fw.load``: state dicts and checkpoints as ``.npz`` plus JSON metadata, and
flat state dicts as ``.safetensors`` (chosen by the file name's ending).

The file is an ordinary NumPy ``.npz`` archive: every array is one member (``a0``, ``a1``, ...)
and the member ``__tinyfw__`` holds UTF-8 JSON describing the nested structure (dicts, lists,
numbers, strings, and references to the arrays). An array saved under several names (a tied
weight, listed by the state dict under both of its names) is stored once, and loading gives
every name that same array. No pickle anywhere: loading a file can never
run code. Writes go to a temporary file in the same directory, are flushed to disk, then renamed
over the target, so an interrupted save leaves the previous file intact.

A path ending in ``.safetensors`` holds one flat dict name -> tensor (a state dict) in the format
PyTorch and Hugging Face read (``tinyfw/safetensors.py``); ``load`` gives back a dict of tensors.
"""
import json
import os
import zipfile

import numpy as np

from . import safetensors
from .fileio import atomic_write
from .tensor import Tensor

FORMAT = "tinyfw-checkpoint"
VERSION = 1


def _array_index(data, to_numpy, arrays, index_of):
    """The member number of ``data`` (a tensor's buffer, or an array): a new one, or the one the
    same object already has."""
    key = id(data)
    if key not in index_of:
        arrays.append(to_numpy())
        index_of[key] = (len(arrays) - 1, data)     # keeps ``data`` alive: its id stays unique
    return index_of[key][0]


def _encode(obj, arrays, index_of):
    if isinstance(obj, Tensor):          # tensors that share their data (detached views) share
        return {"__tensor__": _array_index(obj.data, obj.numpy, arrays, index_of)}
    if isinstance(obj, np.ndarray):
        return {"__array__": _array_index(obj, lambda: obj, arrays, index_of)}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays, index_of), _encode(v, arrays, index_of)]
                             for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, index_of) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays, index_of) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else {"__float__": repr(f)}
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"save: cannot save an object of type {type(obj).__name__} (only tensors, "
                    "arrays, dicts, lists, tuples, numbers, strings and None)")


def _decode(node, arrays, path):
    if isinstance(node, list):
        return [_decode(v, arrays, path) for v in node]
    if isinstance(node, dict):
        if "__tensor__" in node:
            return Tensor(arrays[node["__tensor__"]], device="cpu")
        if "__array__" in node:
            return arrays[node["__array__"]]
        if "__dict__" in node:
            return {_decode(k, arrays, path): _decode(v, arrays, path) for k, v in node["__dict__"]}
        if "__tuple__" in node:
            return tuple(_decode(v, arrays, path) for v in node["__tuple__"])
        if "__float__" in node:
            return float(node["__float__"])
        raise ValueError(f"load: {path} has an unknown entry {sorted(node)} in its metadata")
    return node


def _is_safetensors(path):
    return os.fspath(path).endswith(".safetensors")


def _save_safetensors(obj, path):
    if not isinstance(obj, dict):
        raise TypeError(f"save: a .safetensors file holds a dict name -> tensor (a state dict), "
                        f"got {type(obj).__name__} for {path}")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"save: {path}: .safetensors names must be strings, got {name!r}")
        if not isinstance(value, (Tensor, np.ndarray)):
            raise TypeError(f"save: {path}: {name!r} is a {type(value).__name__}; a .safetensors "
                            "file holds tensors and arrays only (use .npz for anything else)")
        arrays[name] = value.numpy() if isinstance(value, Tensor) else value
    safetensors.save_file(arrays, path)


def save(obj, path):
    """Write ``obj`` (a state dict, or a nested dict of them) to ``path`` atomically; a path
    ending in ``.safetensors`` takes a flat dict name -> tensor."""
    if _is_safetensors(path):
        return _save_safetensors(obj, path)
    arrays = []
    meta = {"format": FORMAT, "version": VERSION, "tree": _encode(obj, arrays, {})}
    members = {f"a{i}": a for i, a in enumerate(arrays)}
    members["__tinyfw__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **members))


def load(path):
    """Read what ``save`` wrote. A missing, truncated or foreign file raises a clear error.
    A ``.safetensors`` file (from tinyfw or elsewhere) gives a dict name -> Tensor (BF16 data
    as float32)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if _is_safetensors(path):
        return {name: Tensor(array, device="cpu")
                for name, array in safetensors.load_file(path).items()}
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "__tinyfw__" not in archive.files:
                raise ValueError(f"load: {path} is a NumPy archive but not a tinyfw file "
                                 "(no __tinyfw__ metadata)")
            meta = json.loads(archive["__tinyfw__"].tobytes().decode("utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"load: {path} is not a tinyfw checkpoint "
                                 f"(format {meta.get('format')!r})")
            if meta.get("version", 0) > VERSION:
                raise ValueError(f"load: {path} was written by a newer tinyfw (format version "
                                 f"{meta['version']}, this one reads up to {VERSION})")
            arrays = {}
            for name in archive.files:
                if name != "__tinyfw__":
                    arrays[int(name[1:])] = archive[name]
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, UnicodeDecodeError,
            json.JSONDecodeError) as e:
        raise ValueError(f"load: {path} is truncated or not a tinyfw file ({type(e).__name__}: "
                         f"{e})") from None
    except ValueError as e:
        if str(e).startswith("load:"):
            raise
        raise ValueError(f"load: {path} is corrupt or not a tinyfw file ({e})") from None
    return _decode(meta["tree"], arrays, path)
