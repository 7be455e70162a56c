"""A small writer of the Torch7 binary serialisation format, for building test ``.t7`` files.

It writes what Lua ``torch.save(path, obj)`` writes in its default mode (binary, referenced)
on a 64-bit little-endian machine, following torch7's ``File.lua`` (``writeObject``) and the
``write`` methods of ``generic/Tensor.c`` and ``generic/Storage.c``. Every value is a 4-byte
type tag followed by its payload:

* ``nil`` (0): nothing more. ``number`` (1): a double, since Lua numbers are doubles.
  ``string`` (2): int length, then the bytes. ``boolean`` (5): int 1 or 0.
* ``table`` (3): int reference index, int number of pairs, then key, value, key, value...
* torch object (4): int reference index, the version string ``"V 1"`` and the class name
  (each as int length + bytes), then the class's own payload:

  - ``torch.*Tensor``: int nDimension, nDimension longs of sizes, nDimension longs of strides
    (in elements), long storageOffset (1-based), then the storage as an object (``nil`` for an
    empty tensor, which has no storage).
  - ``torch.*Storage``: long number of elements, then the raw little-endian data.
  - any other class (``nn.Sequential``, ``cudnn.SpatialConvolution``...): its fields, written
    as a fresh table (which takes the next reference index).

Longs are 8 bytes. Reference indices count tables and torch objects from 1 in the order they
are first written; an object reached again is written as its tag and old index only, as
Torch does for shared tensors and modules.

Python to Lua:

* ``module(typename, **fields)`` -> a torch object of that class with those fields.
* ``numpy.ndarray`` -> a tensor with contiguous strides and its own storage:
  float32 ``torch.FloatTensor``, float64 ``torch.DoubleTensor``, int64 ``torch.LongTensor``
  (also int32 Int, int16 Short, int8 Char, uint8 Byte). ``cuda(array)`` writes the CUDA
  class instead (float32 ``torch.CudaTensor``, float64 ``torch.CudaDoubleTensor``...).
  Torch7 has no 0-d tensors: a 0-d array is an error; an array with no elements is written
  as Torch's empty tensor (nDimension 0, no storage).
* ``dict`` -> table; ``list``/``tuple`` -> table with number keys 1..n, as Lua arrays are.
* ``str``/``bytes`` -> string (str as UTF-8); ``int``/``float`` -> number; ``bool`` -> boolean;
  ``None`` -> nil. Lua tables cannot hold nil, so ``None`` values inside dicts, lists and
  module fields are left out, as Lua would (a list with a ``None`` therefore has a hole).

Identity: the same Python object (array, ``cuda`` wrapper, dict, list, module) reached twice
is written once and referenced after, so sharing survives the round trip. Two different
objects are written twice even if equal; ``cuda(w)`` called twice gives two tensors.

What ``torchfile.load`` (0.1.0, default options, Python 3) returns for these files:

* a tensor -> a numpy array of the storage's dtype (CUDA classes too), a strided view into the
  storage; the empty tensor -> ``np.empty(0)`` of that dtype (shape ``(0,)``).
* a table whose keys are exactly the numbers 1..n -> a Python ``list``, 0-based, in key
  order; this includes the empty table, so ``{}`` and ``[]`` both come back as ``[]``.
  Any other table -> ``torchfile.hashable_uniq_dict`` (a dict compared and hashed by
  identity) with **bytes** keys for string keys and ints for whole-number keys; its
  attribute access ``d.name`` looks up ``b"name"`` and gives ``None`` when absent.
* a class torchfile does not know (every ``nn.*``/``cudnn.*`` module) -> ``torchfile.TorchObject``:
  ``obj._typename`` (also ``obj.torch_typename()``) is **bytes**, e.g. ``b"nn.Sequential"``;
  ``obj._obj`` is the field dict (bytes keys); ``obj.weight`` and ``obj["weight"]`` look up
  ``b"weight"`` and give ``None`` for a missing field (never ``AttributeError``/``KeyError``).
* strings -> ``bytes``; whole numbers -> ``int`` (``1.0`` reads back as ``1``), others
  -> ``float``; booleans -> ``bool``; shared objects -> the same Python object.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TorchClass", "CudaArray", "module", "cuda", "serialize", "save"]

TYPE_NIL = 0
TYPE_NUMBER = 1
TYPE_STRING = 2
TYPE_TABLE = 3
TYPE_TORCH = 4
TYPE_BOOLEAN = 5

# Version string Torch writes before the class name: "V " .. torch.version(obj), and luaT
# gives every class __version = 1 unless it sets another.
VERSION = b"V 1"

# numpy dtype -> the infix of the Torch class names (torch.<X>Tensor / torch.<X>Storage).
_TENSOR_TYPES = {
    np.dtype(np.float32): "Float",
    np.dtype(np.float64): "Double",
    np.dtype(np.int64): "Long",
    np.dtype(np.int32): "Int",
    np.dtype(np.int16): "Short",
    np.dtype(np.int8): "Char",
    np.dtype(np.uint8): "Byte",
}


@dataclass(eq=False)
class TorchClass:
    """A Torch class object other than a tensor (an ``nn`` module, ...): a name and fields."""

    typename: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class CudaArray:
    """An array to be written as a CUDA tensor (``torch.CudaTensor`` for float32)."""

    array: np.ndarray


def module(typename: str, **fields: Any) -> TorchClass:
    """A torch object of class ``typename`` (e.g. ``"nn.ReLU"``) with the given fields."""
    return TorchClass(typename, dict(fields))


def cuda(array: Any) -> CudaArray:
    """Marks ``array`` to be written as a CUDA tensor (``torch.CudaTensor`` for float32)."""
    return CudaArray(np.asarray(array))


def _tensor_class_names(array: np.ndarray, on_cuda: bool) -> tuple[bytes, bytes]:
    """(tensor class, storage class) names for an array, e.g. torch.CudaTensor/CudaStorage."""
    infix = _TENSOR_TYPES.get(array.dtype)
    if infix is None:
        raise TypeError(f"no Torch7 tensor type for dtype {array.dtype}")
    if on_cuda:
        infix = "Cuda" + ("" if infix == "Float" else infix)
    return f"torch.{infix}Tensor".encode(), f"torch.{infix}Storage".encode()


class _Writer:
    """Writes objects to a binary stream, keeping Torch's reference indices."""

    def __init__(self, stream: io.BufferedIOBase):
        self._stream = stream
        self._index_of: dict[int, int] = {}  # id(obj) -> reference index
        self._alive: list[Any] = []  # keeps referenced objects alive so ids stay unique
        self._count = 0

    def _pack(self, fmt: str, *values: Any) -> None:
        self._stream.write(struct.pack("<" + fmt, *values))

    def _string(self, data: bytes) -> None:
        self._pack("i", len(data))
        self._stream.write(data)

    def _new_index(self) -> int:
        self._count += 1
        self._pack("i", self._count)
        return self._count

    def _reference(self, typeidx: int, obj: Any) -> bool:
        """Writes the tag and index; True when ``obj`` was written before (nothing more to do)."""
        self._pack("i", typeidx)
        index = self._index_of.get(id(obj))
        if index is not None:
            self._pack("i", index)
            return True
        self._index_of[id(obj)] = self._new_index()
        self._alive.append(obj)
        return False

    def _torch_header(self, class_name: bytes) -> None:
        self._string(VERSION)
        self._string(class_name)

    def _table_body(self, pairs: list[tuple[Any, Any]]) -> None:
        pairs = [(k, v) for k, v in pairs if v is not None]
        self._pack("i", len(pairs))
        for key, value in pairs:
            if key is None:
                raise TypeError("a Lua table key cannot be nil")
            self.write(key)
            self.write(value)

    def _tensor(self, array: np.ndarray, on_cuda: bool) -> None:
        if array.ndim == 0:
            raise ValueError("Torch7 has no 0-d tensors; write a number or a 1-element array")
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        tensor_class, storage_class = _tensor_class_names(array, on_cuda)
        self._torch_header(tensor_class)
        if array.size == 0:  # Torch's empty tensor: no dimensions, no storage
            self._pack("iq", 0, 1)
            self._pack("i", TYPE_NIL)
            return
        strides = [int(np.prod(array.shape[d + 1 :])) for d in range(array.ndim)]
        self._pack("i", array.ndim)
        self._pack(f"{array.ndim}q", *array.shape)
        self._pack(f"{array.ndim}q", *strides)
        self._pack("q", 1)  # storageOffset, 1-based
        # The storage is an object of its own (a fresh one, so never a back reference).
        self._pack("i", TYPE_TORCH)
        self._new_index()
        self._torch_header(storage_class)
        self._pack("q", array.size)
        self._stream.write(array.tobytes())

    def write(self, obj: Any) -> None:
        """Writes one object (recursively)."""
        if obj is None:
            self._pack("i", TYPE_NIL)
        elif isinstance(obj, (bool, np.bool_)):
            self._pack("ii", TYPE_BOOLEAN, int(bool(obj)))
        elif isinstance(obj, (int, float, np.integer, np.floating)):
            self._pack("id", TYPE_NUMBER, float(obj))
        elif isinstance(obj, (str, bytes)):
            self._pack("i", TYPE_STRING)
            self._string(obj.encode("utf-8") if isinstance(obj, str) else obj)
        elif isinstance(obj, (np.ndarray, CudaArray)):
            if not self._reference(TYPE_TORCH, obj):
                on_cuda = isinstance(obj, CudaArray)
                self._tensor(obj.array if on_cuda else obj, on_cuda)
        elif isinstance(obj, TorchClass):
            if not self._reference(TYPE_TORCH, obj):
                self._torch_header(obj.typename.encode())
                # Torch copies the fields into a new table and writes that: a new index.
                self._pack("i", TYPE_TABLE)
                self._new_index()
                self._table_body(list(obj.fields.items()))
        elif isinstance(obj, dict):
            if not self._reference(TYPE_TABLE, obj):
                self._table_body(list(obj.items()))
        elif isinstance(obj, (list, tuple)):
            if not self._reference(TYPE_TABLE, obj):
                self._table_body([(i + 1, v) for i, v in enumerate(obj)])
        else:
            raise TypeError(f"cannot write {type(obj).__name__} as a Torch7 object")


def serialize(obj: Any) -> bytes:
    """The bytes ``torch.save`` would write for ``obj`` (like ``torch.serialize``)."""
    stream = io.BytesIO()
    _Writer(stream).write(obj)
    return stream.getvalue()


def save(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` to ``path`` as a Torch7 binary file (via a temporary file and a rename)."""
    path = Path(path)
    data = serialize(obj)  # fails before anything is written if obj cannot be written
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
