"""Writes an HDF5 file the way a PyTorch user would with h5py + hdf5plugin, and prints the same
JSON as h5_read.py for what it wrote: zstd (hdf5plugin.Zstd) with shuffle, chunks that leave
partial edge chunks, a nested group, bf16 as uint16 and f8 as uint8 with a `dtype` attribute
(one variable-length str, one fixed-length bytes), a scalar.
Usage: h5_write.py FILE
"""

import hashlib
import json
import sys

import h5py
import hdf5plugin
import numpy as np


def main(path):
    rng = np.random.default_rng(7)
    tensors = {
        "f32": (rng.standard_normal((37, 100)).astype(np.float32), (8, 100), None),
        "f16": (rng.standard_normal((10, 7)).astype(np.float16), (3, 7), None),
        "i64": (rng.integers(-2**62, 2**62, size=13, dtype=np.int64), (5,), None),
        "i8": (rng.integers(-128, 128, size=(9, 4), dtype=np.int8), (4, 4), None),
        "u8": (rng.integers(0, 256, size=(5, 3, 2), dtype=np.uint8), (2, 3, 2), None),
        "flags": (rng.integers(0, 2, size=11).astype(np.bool_), (4,), None),
        "bf16": (rng.integers(0, 2**16, size=(6, 5), dtype=np.uint16), (4, 5), "bfloat16"),
        "f8": (rng.integers(0, 256, size=(7,), dtype=np.uint8), (3,), np.bytes_(b"float8_e4m3fn")),
        "group/inner/weight": (rng.standard_normal((4, 3)).astype(np.float32), (3, 3), None),
    }
    dtypes = {"f32": "F32", "f16": "F16", "i64": "I64", "i8": "I8", "u8": "U8", "flags": "BOOL",
              "bf16": "BF16", "f8": "F8_E4M3", "group/inner/weight": "F32", "scalar": "F64"}
    result = {}
    with h5py.File(path, "w") as f:
        for name, (array, chunks, marker) in tensors.items():
            d = f.create_dataset(name, data=array, chunks=chunks, shuffle=True, **hdf5plugin.Zstd(clevel=3))
            if marker is not None:
                d.attrs["dtype"] = marker
        f.create_dataset("scalar", data=np.float64(2.5))
        tensors["scalar"] = (np.asarray(np.float64(2.5)), None, None)
    for name, (array, _, _) in tensors.items():
        result[name.replace("/", ".")] = {
            "dtype": dtypes[name],
            "shape": list(array.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(),
        }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
