"""The safetensors format, read and written here: no pickle, no third-party package.

A file is three parts:

1. 8 bytes: ``N``, the header's length, an unsigned little-endian 64-bit integer;
2. ``N`` bytes of UTF-8 JSON: ``{name: {"dtype": "F32", "shape": [2, 3], "data_offsets":
   [begin, end]}, ...}`` plus an optional ``"__metadata__": {str: str}``;
3. the data: every tensor's bytes, little-endian, in C order, at ``begin:end`` counted from the
   first byte after the header. The tensors cover the data exactly: no overlaps, no holes.

::

    save_file({"w": array}, "model.safetensors", metadata={"format": "pt"})
    arrays = load_file("model.safetensors")           # name -> NumPy array
    with SafetensorsFile("model.safetensors") as f:   # one tensor at a time
        f.keys(), f.dtype("w"), f.shape("w")
        w = f.read("w", dtype=np.float64, transpose=True)

``SafetensorsFile`` maps the file into memory and copies a tensor out in blocks of rows,
handing each block's pages back to the operating system once copied, so reading a file costs
the memory of the arrays read and not that of the file as well. BF16 (bfloat16, which NumPy
lacks) is read as float32; ``save_file(..., dtypes={"w": "BF16"})`` stores float data as BF16
(rounded to nearest, ties to even).
"""
import json
import math
import mmap
import os
import struct

import numpy as np

from .fileio import atomic_write

__all__ = ["DTYPES", "SafetensorsError", "SafetensorsFile", "load_file", "save_file",
           "read_metadata"]

#: safetensors dtype code -> the little-endian NumPy dtype of its bytes (BF16: the raw bits)
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# NumPy dtype -> code, for writing (BF16 is only written on request: it has no NumPy dtype)
_CODE_OF = {dt.newbyteorder("="): code for code, dt in DTYPES.items() if code != "BF16"}

HEADER_ALIGNMENT = 8          # the data starts on a multiple of 8 bytes (header padded by spaces)
COPY_BLOCK_BYTES = 1 << 24    # read() copies at most this many bytes of the map at a time


class SafetensorsError(ValueError):
    """A file that is not valid safetensors; the message names the file and the tensor."""


def _fail(path, message, name=None):
    where = f"{path}: tensor {name!r}: " if name is not None else f"{path}: "
    raise SafetensorsError(f"safetensors: {where}{message}")


# ------------------------------------------------------------------------------------- header
def _read_header(path, f, file_size):
    """(entries: name -> (code, shape, begin, end), metadata, data_start); everything checked."""
    if file_size < 8:
        _fail(path, f"the file has {file_size} bytes, too few for the 8-byte header length "
              "(truncated, or not a safetensors file)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > file_size - 8:
        _fail(path, f"the header length {n} runs past the end of the file ({file_size} bytes): "
              "truncated, or not a safetensors file")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"the header is not valid UTF-8 JSON ({e})")
    if not isinstance(header, dict):
        _fail(path, f"the header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        _fail(path, "__metadata__ must map strings to strings")
    data_size = file_size - 8 - n
    entries = {name: _check_entry(path, name, info, data_size) for name, info in header.items()}
    _check_coverage(path, entries, data_size)
    return entries, metadata, 8 + n


def _check_entry(path, name, info, data_size):
    if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= set(info)):
        _fail(path, "the header entry must have dtype, shape and data_offsets", name)
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code not in DTYPES:
        _fail(path, f"unknown dtype {code!r} (known: {', '.join(DTYPES)})", name)
    if not (isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        _fail(path, f"shape must be a list of non-negative integers, got {shape!r}", name)
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        _fail(path, f"data_offsets must be [begin, end], got {offsets!r}", name)
    begin, end = offsets
    if not 0 <= begin <= end:
        _fail(path, f"data_offsets {offsets} are not 0 <= begin <= end", name)
    if end > data_size:
        _fail(path, f"data_offsets {offsets} run past the end of the data ({data_size} bytes "
              "after the header): the file is truncated or the header is wrong", name)
    want = math.prod(shape) * DTYPES[code].itemsize
    if end - begin != want:
        _fail(path, f"{end - begin} bytes of data for shape {shape} of {code}, which needs "
              f"{want}", name)
    return code, tuple(shape), begin, end


def _check_coverage(path, entries, data_size):
    """The tensors' byte ranges tile the data: sorted, each starts where the previous ended."""
    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if begin < position:
            _fail(path, f"its bytes {begin}:{end} overlap those of {previous!r}", name)
        if begin > position:
            _fail(path, f"bytes {position}:{begin} of the data belong to no tensor (the next one "
                  "starts after a hole)", name)
        position, previous = end, name
    if position != data_size:
        _fail(path, f"the data has {data_size} bytes but the tensors cover {position} (extra "
              "bytes at the end)")


# ------------------------------------------------------------------------------------- reading
def _bf16_to_float32(bits):
    """bfloat16 bits (uint16) -> float32: they are the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    """A safetensors file opened for reading; the header is checked when it opens.

    ``keys()``, ``dtype(name)`` (the code, e.g. 'F32'), ``shape(name)`` and ``metadata`` describe
    it; ``read(name, dtype=None, transpose=False)`` copies one tensor out. Use it as a context
    manager, or call ``close()``.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"safetensors: no such file: {self.path}")
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._entries, self.metadata, self._data_start = _read_header(self.path, f, size)
            self._map = (mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                         if size > self._data_start else None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Drop the memory map (it closes once no array still views it)."""
        self._map = None

    def keys(self):
        """The tensor names, in the order of their data."""
        return sorted(self._entries, key=lambda name: self._entries[name][2])

    def __contains__(self, name):
        return name in self._entries

    def __len__(self):
        return len(self._entries)

    def _entry(self, name):
        if name not in self._entries:
            _fail(self.path, "no such tensor in the file", name)
        return self._entries[name]

    def dtype(self, name):
        return self._entry(name)[0]

    def shape(self, name):
        return self._entry(name)[1]

    def _stored(self, name):
        """The tensor's bytes as an array of the stored dtype, viewing the memory map."""
        code, shape, begin, end = self._entry(name)
        if self._map is None:
            if end > begin:
                raise ValueError(f"safetensors: {self.path} is closed")
            return np.empty(shape, DTYPES[code])
        start = self._data_start + begin
        return np.frombuffer(self._map, dtype=DTYPES[code], count=math.prod(shape),
                             offset=start).reshape(shape)

    def _release(self, first, last):
        """Hand the pages of file bytes ``first:last`` back: they were copied already."""
        if self._map is None or not hasattr(self._map, "madvise") or last <= first:
            return
        page = mmap.PAGESIZE
        start = first // page * page
        stop = min(-(-last // page) * page, len(self._map))
        self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def read(self, name, dtype=None, transpose=False):
        """A new C-contiguous array holding tensor ``name``.

        ``dtype``: convert to it (default: the stored dtype; float32 for BF16). ``transpose``: a
        2-D tensor ``(m, n)`` comes back as its transpose ``(n, m)``.
        """
        code, shape, begin, _ = self._entry(name)
        stored = self._stored(name)
        natural = np.dtype(np.float32) if code == "BF16" else DTYPES[code].newbyteorder("=")
        target = natural if dtype is None else np.dtype(dtype)
        if transpose and len(shape) != 2:
            _fail(self.path, f"only a 2-D tensor can be read transposed, this one has shape "
                  f"{list(shape)}", name)
        out = np.empty(shape[::-1] if transpose else shape, target)
        if stored.size == 0:
            return out
        rows = stored.reshape(shape[0], -1) if stored.ndim else stored.reshape(1, 1)
        row_bytes = rows.shape[1] * rows.itemsize
        step = max(1, COPY_BLOCK_BYTES // max(row_bytes, 1))
        flat_out = out if transpose else out.reshape(rows.shape)
        for r0 in range(0, rows.shape[0], step):
            block = rows[r0:r0 + step]
            if code == "BF16":
                block = _bf16_to_float32(block)
            elif code == "BOOL" and block.view(np.uint8).max() > 1:
                _fail(self.path, "a BOOL tensor holds bytes other than 0 and 1", name)
            if transpose:
                flat_out[:, r0:r0 + step] = block.T
            else:
                flat_out[r0:r0 + step] = block
            first = self._data_start + begin + r0 * row_bytes
            self._release(first, first + len(block) * row_bytes)
        return out


def load_file(path):
    """Every tensor of the file at ``path``: a dict name -> NumPy array (in the file's order)."""
    with SafetensorsFile(path) as f:
        return {name: f.read(name) for name in f.keys()}


def read_metadata(path):
    """The ``__metadata__`` dict of the file at ``path`` (empty when it has none)."""
    with SafetensorsFile(path) as f:
        return dict(f.metadata)


# ------------------------------------------------------------------------------------- writing
def _float32_to_bf16(array):
    """float data -> bfloat16 bits (uint16), rounded to nearest, ties to even; NaN stays NaN."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(array), np.uint16(0x7FC0), rounded)


def _code_for(path, name, array, requested):
    if requested is not None:
        if requested not in DTYPES:
            raise ValueError(f"save_file: {path}: tensor {name!r}: unknown dtype {requested!r} "
                             f"(known: {', '.join(DTYPES)})")
        if requested == "BF16" and array.dtype.kind != "f":
            raise ValueError(f"save_file: {path}: tensor {name!r}: BF16 needs float data, got "
                             f"{array.dtype}")
        return requested
    code = _CODE_OF.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"save_file: {path}: tensor {name!r}: dtype {array.dtype} has no "
                         f"safetensors equivalent (supported: {', '.join(DTYPES)})")
    return code


def _encoded(array, code):
    """The array's bytes as stored under ``code``: C order, little-endian."""
    if code == "BF16":
        return _float32_to_bf16(array)
    return np.ascontiguousarray(array, dtype=DTYPES[code])


def save_file(tensors, path, metadata=None, dtypes=None):
    """Write ``tensors`` (a dict name -> array) to ``path`` atomically, names sorted.

    ``metadata``: a dict of strings stored as ``__metadata__``. ``dtypes``: name -> safetensors
    code to store that tensor as (e.g. 'BF16' or 'F16'); by default each keeps its own dtype.
    """
    path = os.fspath(path)
    dtypes = dict(dtypes or {})
    unknown = sorted(set(dtypes) - set(tensors))
    if unknown:
        raise ValueError(f"save_file: {path}: dtypes names tensors that are not saved: {unknown}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise ValueError(f"save_file: {path}: metadata must be a dict of strings, got "
                         f"{metadata!r}")
    header, arrays, offset = {}, [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"save_file: {path}: tensor names must be non-empty strings other "
                             f"than '__metadata__', got {name!r}")
        array = np.asarray(tensors[name])
        code = _code_for(path, name, array, dtypes.get(name))
        size = array.size * DTYPES[code].itemsize
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + size]}
        arrays.append((array, code))
        offset += size
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % HEADER_ALIGNMENT)

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array, code in arrays:     # one tensor's encoded copy at a time
            f.write(_encoded(array, code).data)
    atomic_write(path, write)
