#!/usr/bin/env python3
"""Describe safetensors file(s) as read by the official `safetensors` library.

Usage: python scripts/interop/st_read.py FILE_OR_DIR

FILE_OR_DIR is one .safetensors file, or a folder whose *.safetensors files (sorted by name)
are read as one checkpoint. Prints JSON (sorted keys) to stdout:

  {"tensors":  {NAME: {"dtype": "BF16", "shape": [..], "sha256": HEX, "offsets": [start, end],
                       "file": BASENAME}},
   "metadata": {...}}           # __metadata__ (merged over files for a folder; {} if none)

dtype and offsets (data_offsets, relative to the data area) come from the file's own header;
sha256 is over the tensor's raw C-order little-endian bytes as returned by safe_open(framework="numpy").
Exit 1 (message on stderr) if a file can't be read or a tensor name occurs in two files.
"""
import hashlib
import json
import os
import struct
import sys

import ml_dtypes
import numpy as np

# safetensors' numpy path finds bfloat16 by name, but looks float8 types up as numpy attributes.
for _n in ("float8_e4m3fn", "float8_e5m2"):
    if not hasattr(np, _n):
        setattr(np, _n, getattr(ml_dtypes, _n))

from safetensors import safe_open  # noqa: E402


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n).decode("utf-8"))


def describe(path, out):
    header = read_header(path)
    meta = header.pop("__metadata__", None) or {}
    with safe_open(path, framework="numpy") as f:
        for name in f.keys():
            info = header[name]
            arr = f.get_tensor(name)
            if arr.dtype.byteorder == ">":
                arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
            if name in out:
                raise ValueError(f"tensor {name!r} in both {out[name]['file']} and {os.path.basename(path)}")
            out[name] = {
                "dtype": info["dtype"],
                "shape": list(info["shape"]),
                "sha256": hashlib.sha256(arr.tobytes(order="C")).hexdigest(),
                "offsets": list(info["data_offsets"]),
                "file": os.path.basename(path),
            }
    return meta


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = argv[1]
    if os.path.isdir(target):
        files = sorted(os.path.join(target, n) for n in os.listdir(target) if n.endswith(".safetensors"))
    else:
        files = [target]
    tensors, metadata = {}, {}
    try:
        for p in files:
            metadata.update(describe(p, tensors))
    except Exception as e:  # noqa: BLE001
        print(f"st_read: {e}", file=sys.stderr)
        return 1
    json.dump({"tensors": tensors, "metadata": metadata}, sys.stdout, sort_keys=True, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
