"""Reads an HDF5 file with h5py + hdf5plugin and prints JSON {name: {dtype, shape, sha256}}.

Names and dtypes follow fineshard (SPEC §3): dataset path without the leading '/', '/' -> '.',
dtype spelled as safetensors spells it; bf16/f8 come from the `dtype` attribute and are hashed
as their stored integer bytes. sha256 is of the raw little-endian, row-major bytes; marker_type is the Python type h5py gives
the `dtype` attribute (str for a UTF-8 or variable-length string), or null without one.
Usage: h5_read.py FILE
"""

import hashlib
import json
import sys

import h5py
import hdf5plugin  # noqa: F401  (registers the zstd filter, id 32015)
import numpy as np

NUMPY_TO_DTYPE = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}
MARKED = {"bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


def main(path):
    result = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            data = obj[()]
            array = np.asarray(data)
            raw_marker = obj.attrs.get("dtype")
            marker = raw_marker.decode() if isinstance(raw_marker, bytes) else raw_marker
            dtype = MARKED[marker] if marker in MARKED else NUMPY_TO_DTYPE[array.dtype.name]
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            result[name.replace("/", ".")] = {
                "dtype": dtype,
                "shape": list(array.shape),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "marker_type": type(raw_marker).__name__ if raw_marker is not None else None,
            }
        f.visititems(visit)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
