"""torch checkpoints (`.pth` state dicts) read as numpy arrays, without torch.

A checkpoint is pickled, and unpickling runs whatever code the file names. This reader
resolves only the names a state dict of plain tensors needs - `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2` and the typed storage classes (`torch.FloatStorage`...),
each mapped to a numpy stand-in here, never to torch - and refuses every other name before
anything is called. Both layouts torch writes are read: the zip archive (torch >= 1.6:
`<name>/data.pkl` plus one `<name>/data/<key>` record per storage) and the legacy stream
(magic number, protocol, system info, the pickle, the storage keys, then each storage as an
int64 element count and its bytes), in which the packaged EfficientNet-Lite0 weights come.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ml.errors import InvalidWeights

STORAGE_DTYPES = {  # torch's typed storage classes, little-endian as torch writes them
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: np.dtype[Any]
    numel: int


@dataclass(frozen=True, slots=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _TensorRebuilder:
    """The stand-in for torch._utils._rebuild_tensor_v2: records where a tensor lies.

    Slotted and stateless, so a pickle's BUILD instructions cannot set attributes on it."""

    __slots__ = ()

    def __call__(self, storage: object, offset: object, shape: object, stride: object,
                 *_ignored: object) -> _Tensor:
        if not (isinstance(storage, _Storage) and isinstance(offset, int) and _is_count(offset)
                and isinstance(shape, tuple) and _is_counts(shape)
                and isinstance(stride, tuple) and _is_counts(stride)
                and len(shape) == len(stride)):
            raise ValueError("a tensor record has malformed arguments")
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
        if math.prod(shape) and last >= storage.numel:
            raise ValueError(f"a tensor reaches past the end of storage {storage.key}")
        return _Tensor(storage, offset, shape, stride)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_counts(value: object) -> bool:
    return isinstance(value, tuple) and all(_is_count(v) for v in value)


class _Unpickler(pickle.Unpickler):
    """Resolves the state-dict names to stand-ins and nothing else; storages come through
    persistent ids and are collected in `storages`."""

    def __init__(self, file: IO[bytes], path: Path, tensors: bool) -> None:
        super().__init__(file)
        self.path = path
        self.tensors = tensors
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.tensors:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return _TensorRebuilder()
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(name, np.dtype(STORAGE_DTYPES[name]))
        raise InvalidWeights(self.path, f"it references {module}.{name}; only plain tensors "
                                        "(torch's tensor-rebuild and storage types) are read")

    def persistent_load(self, pid: Any) -> _Storage:
        if not self.tensors:
            raise InvalidWeights(self.path, "a storage record where none belongs")
        # ("storage", type, key, location, numel), legacy files add view metadata (None)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _is_count(pid[4])):
            raise InvalidWeights(self.path, f"unknown persistent record {str(pid)[:80]}")
        if len(pid) == 6 and pid[5] is not None:
            raise InvalidWeights(self.path, "storage views are not supported")
        storage = _Storage(pid[2], pid[1].dtype, pid[4])
        if self.storages.setdefault(storage.key, storage) != storage:
            raise InvalidWeights(self.path, f"storage {storage.key} is declared twice")
        return storage


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of the state dict saved in `path`, by name, as numpy arrays (C order).

    Raises InvalidWeights for anything but a state dict of plain tensors - a foreign name in
    the pickle is refused before it is resolved - and FileNotFoundError for a missing file.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _from_zip(path)
        with open(path, "rb") as handle:
            return _from_legacy(path, handle)
    except (InvalidWeights, FileNotFoundError):
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
            KeyError, IndexError, AttributeError, struct.error, OverflowError) as exc:
        raise InvalidWeights(path, f"not a torch state dict ({type(exc).__name__}: "
                                   f"{str(exc)[:200]})") from None


def _from_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise InvalidWeights(path, "a zip without exactly one <name>/data.pkl")
        prefix = pickles[0].removesuffix("data.pkl")
        if f"{prefix}byteorder" in archive.namelist() and \
                archive.read(f"{prefix}byteorder").strip() != b"little":
            raise InvalidWeights(path, "big-endian storages are not supported")
        unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), path, tensors=True)
        state = unpickler.load()
        data = {key: archive.read(f"{prefix}data/{key}") for key in unpickler.storages}
    return _materialise(path, state, unpickler.storages, data.__getitem__)


def _from_legacy(path: Path, handle: IO[bytes]) -> dict[str, np.ndarray]:
    def header() -> Any:
        return _Unpickler(handle, path, tensors=False).load()

    if header() != LEGACY_MAGIC:
        raise InvalidWeights(path, "neither a zip archive nor a legacy torch file")
    if header() != LEGACY_PROTOCOL:
        raise InvalidWeights(path, "an unknown legacy protocol version")
    info = header()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise InvalidWeights(path, "big-endian storages are not supported")
    unpickler = _Unpickler(handle, path, tensors=True)
    state = unpickler.load()
    keys = header()
    if not isinstance(keys, list) or sorted(keys) != sorted(unpickler.storages):
        raise InvalidWeights(path, "the storage list does not match the tensors")
    size = os.fstat(handle.fileno()).st_size
    data = {}
    for key in keys:
        (count,) = struct.unpack("<q", handle.read(8))
        storage = unpickler.storages[key]
        if count != storage.numel or handle.tell() + count * storage.dtype.itemsize > size:
            raise InvalidWeights(path, f"storage {key} is truncated or mis-sized")
        data[key] = handle.read(count * storage.dtype.itemsize)
    return _materialise(path, state, unpickler.storages, data.__getitem__)


def _materialise(path: Path, state: object, storages: dict[str, _Storage],
                 read: Callable[[str], bytes]) -> dict[str, np.ndarray]:
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
        raise InvalidWeights(path, "not a state dict (a mapping of names to tensors)")
    flat: dict[str, np.ndarray] = {}
    for key, storage in storages.items():
        blob = read(key)
        if len(blob) != storage.numel * storage.dtype.itemsize:
            raise InvalidWeights(path, f"storage {key} is truncated or mis-sized")
        flat[key] = np.frombuffer(blob, storage.dtype)
    arrays = {}
    for name, tensor in state.items():
        base = flat[tensor.storage.key]
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[tensor.offset:], tensor.shape, [s * itemsize for s in tensor.stride],
            writeable=False)
        arrays[name] = np.array(view, dtype=base.dtype.newbyteorder("="), order="C")
    return arrays
