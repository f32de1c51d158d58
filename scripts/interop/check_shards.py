#!/usr/bin/env python3
"""Independent check of a fineshard output folder, from its manifest alone, with the official libraries.

Usage: check_shards.py OUT SOURCE

Reads OUT/manifest.json (or, without it, the union of OUT/manifest.ranks-*.json), then for every rank
and every output tensor: reads the tensor with the official `safetensors` library (or h5py +
hdf5plugin for HDF5 output), builds the expected array from the SOURCE checkpoint (safetensors file,
folder or index; or HDF5) by copying each piece's source region to its `at` offset into zeros (a fill
piece, which has no source, writes its constant `fill` in the tensor's dtype over the box `ranges` at
`at`: the attention scales of --layout vllm; a piece with a `transform` (`shard --dtype bf16`) is computed
from the source region by fp8_cast_ref.py, the numpy + ml_dtypes reference), and compares dtype, shape and
bytes, and each tensor's bytes with the SHA-256 its file record's `tensor_sha256` gives (when the manifest
has them). Prints a JSON summary; exits 1 on the first difference (named), 2 on a transform kind it does not know.
"""
import glob
import hashlib
import json
import os
import sys

import ml_dtypes
import numpy as np

for _n in ("float8_e4m3fn", "float8_e5m2"):
    if not hasattr(np, _n):
        setattr(np, _n, getattr(ml_dtypes, _n))

from safetensors import safe_open  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp8_cast_ref  # noqa: E402

KNOWN_TRANSFORMS = ("cast", "fp8_block_dequant")

# Raw integer views for comparing bytes (bf16/f8 compared as their bit patterns).
# Value types for fill pieces' constants.
VALUE = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
RAW = {"F64": "<u8", "F32": "<u4", "F16": "<u2", "BF16": "<u2", "F8_E4M3": "u1", "F8_E5M2": "u1",
       "I64": "<u8", "I32": "<u4", "I16": "<u2", "I8": "u1", "U8": "u1", "BOOL": "u1"}


def raw(array, dtype):
    a = np.ascontiguousarray(array)
    return a.view(np.dtype(RAW[dtype])) if a.size else a.astype(np.dtype(RAW[dtype]))


class SafetensorsSource:
    def __init__(self, path):
        files = [path]
        if os.path.isdir(path):
            index = os.path.join(path, "model.safetensors.index.json")
            if os.path.exists(index):
                names = sorted(set(json.load(open(index))["weight_map"].values()))
                files = [os.path.join(path, n) for n in names]
            else:
                files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        self.where = {}
        self.handles = [safe_open(f, framework="numpy") for f in files]
        for h in self.handles:
            for k in h.keys():
                self.where[k] = h

    def get(self, name):
        return self.where[name].get_tensor(name)


class H5Source:
    def __init__(self, path):
        import h5py
        import hdf5plugin  # noqa: F401
        files = sorted(glob.glob(os.path.join(path, "*.h5"))) if os.path.isdir(path) else [path]
        self.data = {}
        for f in files:
            h = h5py.File(f, "r")
            h.visititems(lambda n, o: self.data.__setitem__(n.replace("/", "."), o) if isinstance(o, h5py.Dataset) else None)

    def get(self, name):
        return self.data[name][()]


def open_source(path):
    probe = path
    if os.path.isdir(path):
        st = glob.glob(os.path.join(path, "*.safetensors"))
        return SafetensorsSource(path) if st else H5Source(path)
    with open(probe, "rb") as f:
        return H5Source(path) if f.read(8) == b"\x89HDF\r\n\x1a\n" else SafetensorsSource(path)


def read_output(out, file, name, fmt):
    path = os.path.join(out, file)
    if fmt == "hdf5":
        import h5py
        import hdf5plugin  # noqa: F401
        with h5py.File(path, "r") as f:
            return f[name][()]
    with safe_open(path, framework="numpy") as f:
        return f.get_tensor(name)


def manifests(out):
    full = os.path.join(out, "manifest.json")
    if os.path.exists(full):
        return [json.load(open(full))]
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "manifest.ranks-*.json")))]


def main(out, source_path):
    ms = manifests(out)
    if not ms:
        print(f"check_shards: no manifest in {out}", file=sys.stderr)
        return 1
    for m in ms:
        for r in m["ranks"]:
            for t in r["tensors"]:
                for p in t["pieces"]:
                    kind = p.get("transform", {}).get("kind") if "transform" in p else None
                    if "transform" in p and kind not in KNOWN_TRANSFORMS:
                        print(f"check_shards: rank {r['rank']} tensor '{t['name']}': unknown transform kind {kind!r} "
                              f"(known: {', '.join(KNOWN_TRANSFORMS)})", file=sys.stderr)
                        return 2
    fmt = ms[0]["parallel"]["format"]
    source = open_source(source_path)
    specs = {t["name"]: t for t in ms[0]["source"]["tensors"]}
    cache = {}
    checked = 0
    hashed = 0
    ranks = 0
    for m in ms:
        for r in m["ranks"]:
            ranks += 1
            hashes = {f["name"]: f.get("tensor_sha256") or {} for f in r["files"]}
            for t in r["tensors"]:
                got = read_output(out, t["file"], t["name"], fmt)
                expected_hash = hashes.get(t["file"], {}).get(t["name"])
                if expected_hash is not None:
                    digest = hashlib.sha256(raw(got, t["dtype"]).tobytes()).hexdigest()
                    if digest != expected_hash:
                        print(f"rank {r['rank']} {t['name']} in {t['file']}: SHA-256 {digest} != manifest {expected_hash}", file=sys.stderr)
                        return 1
                    hashed += 1
                if list(got.shape) != t["shape"]:
                    print(f"rank {r['rank']} {t['name']}: shape {list(got.shape)} != manifest {t['shape']}", file=sys.stderr)
                    return 1
                expected = np.zeros(t["shape"], dtype=np.dtype(RAW[t["dtype"]]))
                for p in t["pieces"]:
                    if "fill" in p:
                        box = [b - a for a, b in p["ranges"]]
                        block = np.full(box, p["fill"], dtype=VALUE[t["dtype"]]).view(np.dtype(RAW[t["dtype"]]))
                        expected[tuple(slice(a, a + n) for a, n in zip(p["at"], box))] = block
                        continue
                    if "transform" in p:
                        def region_of(name, slices, source_name=p["source"]):
                            key = ("typed", name or source_name)
                            if key not in cache:
                                cache[key] = source.get(name or source_name)
                            return cache[key][slices]
                        block = fp8_cast_ref.apply(p["transform"], region_of, p["ranges"]).view(np.dtype(RAW[t["dtype"]]))
                        block = block.reshape((1,) * (len(p["at"]) - block.ndim) + block.shape)
                        expected[tuple(slice(a, a + n) for a, n in zip(p["at"], block.shape))] = block
                        continue
                    if p["source"] not in cache:
                        cache[p["source"]] = raw(source.get(p["source"]), specs[p["source"]]["dtype"])
                    src = cache[p["source"]]
                    region = tuple(slice(a, b) for a, b in p["ranges"])
                    block = src[region]
                    # A stacked output (a routed expert in vLLM's w13_weight) has leading unit dimensions.
                    block = block.reshape((1,) * (len(p["at"]) - block.ndim) + block.shape)
                    target = tuple(slice(a, a + n) for a, n in zip(p["at"], block.shape))
                    expected[target] = block
                if raw(got, t["dtype"]).tobytes() != expected.tobytes():
                    diff = np.argwhere(raw(got, t["dtype"]).reshape(expected.shape) != expected)
                    print(f"rank {r['rank']} {t['name']} in {t['file']}: differs from the planned slices at {diff[0].tolist()}", file=sys.stderr)
                    return 1
                checked += 1
    json.dump({"ranks": ranks, "tensors": checked, "tensors_hashed": hashed, "format": fmt}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
