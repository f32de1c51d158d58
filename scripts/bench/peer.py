#!/usr/bin/env python3
"""The peer: a straightforward resharder written the way a user would write it today.

Official `safetensors` library (safe_open + get_slice) and numpy. Covers the one configuration the
benchmark compares: all-DP N with every fine-grained size N, Hugging Face layout (N = --ranks, default 8):
  embed_tokens / lm_head   vocab-parallel, table zero-padded to a multiple of 64 rows, rows split
  self_attn.o_proj         split dim 1
  mlp.gate_proj / up_proj  split dim 0
  mlp.down_proj            split dim 1
  q/k/v                    whole (global TP = 1)
  everything else          replicated
One safetensors file per rank (OUT/model-rank-{r}-part-0.safetensors) via safetensors.numpy.save_file;
config.json and other non-weight files copied. Hashes nothing.
"""
import argparse
import json
import os
import shutil

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy; safetensors needs it for BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--vocab-padding", type=int, default=64)
    a = ap.parse_args()
    n = a.ranks
    os.makedirs(a.out, exist_ok=True)

    index = os.path.join(a.checkpoint, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    else:
        files = ["model.safetensors"]

    for rank in range(n):
        tensors = {}
        for fname in files:
            with safe_open(os.path.join(a.checkpoint, fname), framework="numpy") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    shape = sl.get_shape()
                    if "embed_tokens" in name or name.startswith("lm_head"):
                        vocab = shape[0]
                        padded = -(-vocab // a.vocab_padding) * a.vocab_padding
                        rows = padded // n
                        start, stop = rank * rows, min((rank + 1) * rows, vocab)
                        t = np.zeros([rows] + list(shape[1:]), dtype=ml_dtypes.bfloat16)
                        if start < stop:
                            t[: stop - start] = sl[start:stop]
                    elif "o_proj" in name or "down_proj" in name:
                        cols = shape[1] // n
                        t = sl[:, rank * cols:(rank + 1) * cols]
                    elif "gate_proj" in name or "up_proj" in name:
                        rows = shape[0] // n
                        t = sl[rank * rows:(rank + 1) * rows]
                    else:
                        t = sl[:]
                    tensors[name] = np.ascontiguousarray(t)
        save_file(tensors, os.path.join(a.out, f"model-rank-{rank}-part-0.safetensors"))
        del tensors

    for entry in os.listdir(a.checkpoint):
        src = os.path.join(a.checkpoint, entry)
        if entry.endswith(".safetensors") or entry == "model.safetensors.index.json" or entry == "COMPLETE":
            continue
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(a.out, entry), dirs_exist_ok=True)
        else:
            shutil.copy(src, os.path.join(a.out, entry))


if __name__ == "__main__":
    main()
