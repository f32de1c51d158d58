#!/usr/bin/env python3
"""Write a safetensors file with one tensor per dtype using the official library.

Usage: python scripts/interop/st_write.py OUT_FILE SEED

Tensors (seeded random contents, numpy default_rng(SEED)):
  f64 [3,5] F64 · f32 [4,7] F32 · f16 [2,3,4] F16 · bf16 [6,8] BF16 · f8_e4m3 [5,16] F8_E4M3 ·
  f8_e5m2 [16] F8_E5M2 · i64 [] I64 (scalar) · i32 [7] I32 · i16 [0,3] I16 (zero-size) ·
  i8 [2,2,2,2] I8 · u8 [33] U8 · bool [3,3] BOOL
__metadata__ is {"format": "np"}. Afterwards prints the same JSON as st_read.py for OUT_FILE.
"""
import os
import sys

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_read  # noqa: E402


def tensors(seed):
    rng = np.random.default_rng(seed)

    def normal(shape, dt):
        return rng.normal(0.0, 1.0, size=shape).astype(np.float32).astype(dt)

    def ints(shape, dt):
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)

    return {
        "f64": rng.normal(0.0, 1.0, size=(3, 5)).astype(np.float64),
        "f32": normal((4, 7), np.float32),
        "f16": normal((2, 3, 4), np.float16),
        "bf16": normal((6, 8), ml_dtypes.bfloat16),
        "f8_e4m3": normal((5, 16), ml_dtypes.float8_e4m3fn),
        "f8_e5m2": normal((16,), ml_dtypes.float8_e5m2),
        "i64": ints((), np.int64),
        "i32": ints((7,), np.int32),
        "i16": ints((0, 3), np.int16),
        "i8": ints((2, 2, 2, 2), np.int8),
        "u8": ints((33,), np.uint8),
        "bool": rng.integers(0, 2, size=(3, 3)).astype(np.bool_),
    }


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, seed = argv[1], int(argv[2])
    # np.ascontiguousarray would turn the 0-d scalar into shape [1]; tobytes()/save_file copy as needed
    save_file({k: np.require(v, requirements="C") for k, v in tensors(seed).items()}, out, metadata={"format": "np"})
    return st_read.main(["st_read.py", out])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
