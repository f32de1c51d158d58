#!/usr/bin/env python3
"""Seeded synthetic Llama-architecture checkpoint for the fineshard benchmark.

Shapes:  1B = TinyLlama-1.1B (hidden 2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632,
vocab 32000, untied);  4B = hidden 3072, 36 layers, 24 heads, 8 kv heads, intermediate 8192 (~3.8B).
Weights are bf16 drawn from N(0, 0.02) (norm weights 1 + N(0, 0.02)), so compression sees realistic data.

Streaming: the safetensors header is written first, then each tensor's bytes in chunks of at most
--chunk-elements values; no tensor is ever held whole. Files are split at --max-shard-size like
Hugging Face's save_pretrained (model-0000i-of-0000n.safetensors + model.safetensors.index.json);
a checkpoint that fits in one shard is a single model.safetensors.

The folder ($FINESHARD_BENCH_DIR or /tmp/fineshard-bench)/llama-<size>-seed<seed> is cached: it is
reused when its COMPLETE marker exists (built under a temporary name and renamed). Prints the folder.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import time

import numpy as np

SHAPES = {
    "1B": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
               intermediate_size=5632, vocab_size=32000),
    "4B": dict(hidden_size=3072, num_hidden_layers=36, num_attention_heads=24, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=32000),
}


def tensor_list(s):
    """(name, shape, kind) in Hugging Face state-dict order."""
    h, inter, v = s["hidden_size"], s["intermediate_size"], s["vocab_size"]
    hd = h // s["num_attention_heads"]
    kv = s["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", (v, h), "w")]
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (h, h), "w"),
            (p + "self_attn.k_proj.weight", (kv, h), "w"),
            (p + "self_attn.v_proj.weight", (kv, h), "w"),
            (p + "self_attn.o_proj.weight", (h, h), "w"),
            (p + "mlp.gate_proj.weight", (inter, h), "w"),
            (p + "mlp.up_proj.weight", (inter, h), "w"),
            (p + "mlp.down_proj.weight", (h, inter), "w"),
            (p + "input_layernorm.weight", (h,), "norm"),
            (p + "post_attention_layernorm.weight", (h,), "norm"),
        ]
    out += [("model.norm.weight", (h,), "norm"), ("lm_head.weight", (v, h), "w")]
    return out


def to_bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even (no NaNs in this data)."""
    u = x.view(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (u >> np.uint32(16)).astype(np.uint16)


def write_file(path, tensors, rng, chunk):
    """Header first, then every tensor's bytes in chunks. Offsets follow the list order."""
    meta, off = {}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 2
        meta[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    # The reference library writes "__metadata__" first and pads the header with spaces to 8 bytes.
    header = json.dumps({"__metadata__": {"format": "pt"}, **meta}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb", buffering=0) as f:
        f.write(struct.pack("<Q", len(header)) + header)
        buf = np.empty(chunk, dtype=np.float32)
        for name, shape, kind in tensors:
            left = int(np.prod(shape))
            while left:
                k = min(left, chunk)
                b = buf[:k]
                rng.standard_normal(out=b, dtype=np.float32)
                b *= np.float32(0.02)
                if kind == "norm":
                    b += np.float32(1.0)
                f.write(to_bf16_bits(b).tobytes())
                left -= k
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1B", choices=sorted(SHAPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=os.environ.get("FINESHARD_BENCH_DIR", "/tmp/fineshard-bench"))
    ap.add_argument("--max-shard-size", type=float, default=5e9, help="bytes per file (Hugging Face default 5 GB)")
    ap.add_argument("--chunk-elements", type=int, default=1 << 22)
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    a = ap.parse_args()

    s = SHAPES[a.size]
    out = os.path.join(a.dir, f"llama-{a.size.lower()}-seed{a.seed}")
    if a.max_shard_size != 5e9:  # another split is another checkpoint (the index-sharded 1B: --max-shard-size 1.2e9)
        out += f"-shard{a.max_shard_size / 1e9:g}GB"
    if os.path.exists(os.path.join(out, "COMPLETE")) and not a.force:
        print(out)
        return
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()
    rng = np.random.Generator(np.random.PCG64(a.seed))

    tensors = tensor_list(s)
    # Split into shards in order, like save_pretrained (a tensor is never split).
    shards, cur, cur_bytes = [], [], 0
    for t in tensors:
        n = int(np.prod(t[1])) * 2
        if cur and cur_bytes + n > a.max_shard_size:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(t)
        cur_bytes += n
    shards.append(cur)

    total, weight_map = 0, {}
    for i, group in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_file(os.path.join(tmp, name), group, rng, a.chunk_elements)
        weight_map.update({t[0]: name for t in group})
    if len(shards) > 1:
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)

    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "head_dim": s["hidden_size"] // s["num_attention_heads"], "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        **s,
    }
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    params = total // 2
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        f.write(f"size={a.size} seed={a.seed} params={params} bytes={total}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"generated {out}: {params / 1e9:.2f}B params, {total / 1e9:.2f} GB in {time.time() - t0:.0f} s",
          file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
