"""Writes a zstd-compressed chunked dataset 'w' (float32 [64, 64], chunks of 16 rows) with h5py +
hdf5plugin, then overwrites the stored bytes of its first chunk with garbage, so that reading it
must fail in the zstd filter. MODE 'garbage' replaces every byte; 'body' keeps the zstd frame
header (so the content size is known) and garbles the rest.
Usage: h5_corrupt_chunk.py FILE MODE
"""

import sys

import h5py
import hdf5plugin
import numpy as np


def main(path, mode):
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=data, chunks=(16, 64), **hdf5plugin.Zstd(clevel=3))
    with h5py.File(path, "r") as f:
        info = f["w"].id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    keep = 6 if mode == "body" else 0
    with open(path, "r+b") as raw:
        raw.seek(offset + keep)
        raw.write(bytes((0xA5 ^ i) & 0xFF for i in range(size - keep)))
    print(offset, size)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
