"""Read a legacy (non-zip) PyTorch ``.pt`` state dict without importing torch.

The legacy format is a concatenation of pickles: a magic number, the protocol
version, system info, the pickled object (tensors referenced through
``persistent_load``), the list of storage keys, then the raw bytes of every
storage (an 8-byte little-endian element count followed by the data).

Only the handful of globals a state dict needs are allowed (a restricted
unpickler): anything else in the file is refused.
"""

import collections
import io
import pickle
import struct

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        kind, stype, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind}")
        self.storages.setdefault(key, (stype.name, numel))
        return key


def load_state_dict(path):
    """Return an ``OrderedDict`` of name -> float32 numpy array."""
    with open(path, "rb") as fh:
        data = fh.read()
    f = io.BytesIO(data)
    magic = pickle.load(f)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a legacy torch file (magic {magic!r})")
    protocol = pickle.load(f)
    if protocol != 1001:
        raise ValueError(f"{path}: unsupported protocol {protocol}")
    pickle.load(f)  # sys info
    storages = {}
    obj = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    raw = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        stype, _ = storages[key]
        dtype = np.dtype(_DTYPES[stype])
        raw[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype=dtype)
    if f.read(1):
        raise ValueError(f"{path}: trailing bytes after storages")
    out = collections.OrderedDict()
    for name, t in obj.items():
        _, key, offset, size, stride = t
        base = raw[key]
        arr = np.lib.stride_tricks.as_strided(
            base[offset:], shape=size, strides=[s * base.itemsize for s in stride]
        )
        out[name] = np.ascontiguousarray(arr).astype(np.float32)
    return out
