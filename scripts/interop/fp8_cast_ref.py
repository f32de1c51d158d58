#!/usr/bin/env python3
"""A numpy + ml_dtypes reference for `fineshard shard --dtype bf16`, written without looking at the Swift code:
DeepSeek's `fp8_cast_bf16.py` arithmetic (`weight_dequant` in its kernel.py: `float32(w) * s` per block,
stored as bfloat16) on the CPU.

Usage:
  fp8_cast_ref.py tensors SRC        JSON {"tensors": {name: {"dtype", "shape", "sha256"}}} of what
                                     fp8_cast_bf16.py would write for SRC (a safetensors file or folder):
                                     F8_E4M3 weights with a `_scale_inv` dequantized to BF16, the scales
                                     dropped, every other tensor unchanged.
  fp8_cast_ref.py make-edge SRC OUT  OUT: a copy of the FP8 checkpoint SRC (config.json + one safetensors
                                     file) with weight_block_size 24 (so shards of 64 cut blocks and
                                     edges are partial) and FP8 weights / scales full of edge values:
                                     every one of the 256 FP8 bytes (±0, subnormals, ±448, NaN), scales
                                     that make products subnormal, overflow to infinity, or round to a tie.

NaN: ml_dtypes writes a NaN as the quiet NaN 0x7FC0 with its sign, which fineshard follows (PyTorch's CPU
cast writes 0x7FC0 whatever the sign, CUDA 0x7FFF).
"""
import glob
import hashlib
import json
import math
import os
import shutil
import sys

import ml_dtypes
import numpy as np

for _n in ("float8_e4m3fn", "float8_e5m2"):
    if not hasattr(np, _n):
        setattr(np, _n, getattr(ml_dtypes, _n))

from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

BF16 = ml_dtypes.bfloat16


def dequant_fp8_block(w, scale, block, origin=(0, 0)):
    """bf16(float32(w[i, j]) * float32(scale[(origin_i + i) // b0 - origin_i // b0, ...])): `w` is a 2-D region
    of a weight starting at `origin`, `scale` the blocks that cover it."""
    w = np.asarray(w).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    rows = (origin[0] + np.arange(w.shape[0])) // block[0] - origin[0] // block[0]
    cols = (origin[1] + np.arange(w.shape[1])) // block[1] - origin[1] // block[1]
    s = np.asarray(scale).astype(np.float32)[rows][:, cols]
    with np.errstate(over="ignore", invalid="ignore"):
        return (w * s).astype(BF16)


def cast_float(x):
    """bf16(float32(x)) of an F32 or F16 array, round to nearest even."""
    return np.asarray(x).astype(np.float32).astype(BF16)


def apply(transform, region_bytes_of, region):
    """The expected BF16 array of a manifest piece's transform; `region_bytes_of(name, slices)` reads a source region."""
    kind = transform.get("kind")
    slices = tuple(slice(a, b) for a, b in region)
    if kind == "cast":
        return cast_float(region_bytes_of(None, slices))
    if kind == "fp8_block_dequant":
        b0, b1 = transform["block"]
        (r0, r1), (c0, c1) = region
        blocks = (slice(r0 // b0, -(-r1 // b0)), slice(c0 // b1, -(-c1 // b1)))
        return dequant_fp8_block(region_bytes_of(None, slices), region_bytes_of(transform["scale"], blocks), (b0, b1), (r0, c0))
    raise KeyError(kind)


def files_of(src):
    if os.path.isdir(src):
        return sorted(glob.glob(os.path.join(src, "*.safetensors")))
    return [src]


def read_all(src):
    out = {}
    for f in files_of(src):
        with safe_open(f, framework="numpy") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def dtype_name(a):
    return {"float8_e4m3fn": "F8_E4M3", "bfloat16": "BF16", "float32": "F32", "float16": "F16"}.get(a.dtype.name, a.dtype.name.upper())


def reference_tensors(src, block):
    tensors = read_all(src)
    out = {}
    for name, t in tensors.items():
        if name.endswith("_scale_inv") and name[: -len("_scale_inv")] in tensors:
            continue
        if t.dtype == ml_dtypes.float8_e4m3fn and name + "_scale_inv" in tensors:
            t = dequant_fp8_block(t, tensors[name + "_scale_inv"], block)
        out[name] = t
    return out


def block_of(src):
    folder = src if os.path.isdir(src) else os.path.dirname(src)
    config = json.load(open(os.path.join(folder, "config.json")))
    return tuple(config.get("quantization_config", {}).get("weight_block_size", [128, 128]))


def edge_values(shape, seed):
    """FP8 bytes: every byte value, then a seeded mix, so each weight holds ±0, subnormals, ±448 and NaN."""
    n = math.prod(shape)
    rng = np.random.default_rng(seed)
    data = np.concatenate([np.arange(256, dtype=np.uint8), rng.integers(0, 256, size=max(0, n - 256), dtype=np.uint8)])[:n]
    rng.shuffle(data)
    return data.reshape(shape).view(ml_dtypes.float8_e4m3fn)


def edge_scales(shape, seed):
    """Normal scales, with some that push products to subnormal float32 / BF16, to infinity, and exact ties."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(1e-4, 1e-2, size=shape).astype(np.float32)
    special = np.array([1e-42, 2.0 ** -140, 1e36, 3.0e38, 1.0, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 0.0, -0.5], dtype=np.float32)
    flat = s.reshape(-1)
    flat[: min(flat.size, special.size)] = special[: flat.size]
    return s


def make_edge(src, out, block=24):
    os.makedirs(out, exist_ok=True)
    folder = src if os.path.isdir(src) else os.path.dirname(src)
    config = json.load(open(os.path.join(folder, "config.json")))
    config["quantization_config"]["weight_block_size"] = [block, block]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    tensors = read_all(src)
    new = {}
    for i, (name, t) in enumerate(sorted(tensors.items())):
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == ml_dtypes.float8_e4m3fn:
            new[name] = edge_values(t.shape, i)
            new[name + "_scale_inv"] = edge_scales([-(-d // block) for d in t.shape], i)
        else:
            new[name] = t
    save_file(new, os.path.join(out, "model.safetensors"))


def main(argv):
    if len(argv) == 3 and argv[1] == "tensors":
        ref = reference_tensors(argv[2], block_of(argv[2]))
        summary = {n: {"dtype": dtype_name(t), "shape": list(t.shape), "sha256": hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest()}
                   for n, t in ref.items()}
        json.dump({"tensors": summary}, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if len(argv) == 4 and argv[1] == "make-edge":
        make_edge(argv[2], argv[3])
        for extra in ("generation_config.json",):
            p = os.path.join(argv[2], extra)
            if os.path.exists(p):
                shutil.copy(p, argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
