#!/usr/bin/env python3
"""Seeded synthetic DeepSeek-V3-shaped FP8-block checkpoint (≈1.2B parameters) and its BF16 twin, for
scripts/bench_cast.sh.

  make_fp8_blocks.py DIR [--layers 2]

Writes DIR/fp8 (F8_E4M3 linear weights with F32 `weight_scale_inv` per 128×128 block, BF16 norms and
embedding, config.json with quantization_config) and DIR/bf16 (the same tensors, every FP8 weight as BF16
and no scales: the bytes `shard --dtype bf16` writes, so sharding it copies the same output bytes). Layers
have DeepSeek-V3's dense shapes (hidden 7168, MLA q_lora 1536 / kv_lora 512, intermediate 18432): ≈583M
parameters each. FP8 bytes are finite E4M3 values (no NaN); scales ~1e-3. Streamed in chunks; each folder
is reused when its .complete marker exists. Prints DIR.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

H, QL, KVL, HEADS, NOPE, ROPE, V, INTER, VOCAB, BLOCK = 7168, 1536, 512, 128, 128, 64, 128, 18432, 1024, 128


def tensors(layers):
    """(name, shape, kind): kind 'fp8' (a weight with a block scale) or 'bf16'."""
    out = [("model.embed_tokens.weight", (VOCAB, H), "bf16"), ("model.norm.weight", (H,), "bf16"),
           ("lm_head.weight", (VOCAB, H), "bf16")]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (H,), "bf16"), (p + "post_attention_layernorm.weight", (H,), "bf16"),
            (p + "self_attn.q_a_proj.weight", (QL, H), "fp8"), (p + "self_attn.q_a_layernorm.weight", (QL,), "bf16"),
            (p + "self_attn.q_b_proj.weight", (HEADS * (NOPE + ROPE), QL), "fp8"),
            (p + "self_attn.kv_a_proj_with_mqa.weight", (KVL + ROPE, H), "fp8"),
            (p + "self_attn.kv_a_layernorm.weight", (KVL,), "bf16"),
            (p + "self_attn.kv_b_proj.weight", (HEADS * (NOPE + V), KVL), "fp8"),
            (p + "self_attn.o_proj.weight", (H, HEADS * V), "fp8"),
            (p + "mlp.gate_proj.weight", (INTER, H), "fp8"), (p + "mlp.up_proj.weight", (INTER, H), "fp8"),
            (p + "mlp.down_proj.weight", (H, INTER), "fp8"),
        ]
    return out


def entries(layers, fp8):
    """(name, dtype, shape, generator of byte chunks) in name order."""
    rng = np.random.default_rng(7)
    out = []
    for name, shape, kind in tensors(layers):
        n = int(np.prod(shape))
        if kind == "fp8" and fp8:
            # Finite E4M3 bytes: exponent field below 15 avoids NaN (0x7F / 0xFF).
            out.append((name, "F8_E4M3", shape, n, lambda k, r=rng: (r.integers(0, 0x78, k, dtype=np.uint8) | (r.integers(0, 2, k, dtype=np.uint8) << 7)).tobytes()))
            blocks = [-(-d // BLOCK) for d in shape]
            out.append((name + "_scale_inv", "F32", blocks, int(np.prod(blocks)), lambda k, r=rng: r.uniform(5e-4, 2e-3, k).astype("<f4").tobytes()))
        else:
            out.append((name, "BF16", shape, n, lambda k, r=rng: (r.normal(0, 0.02, k).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()))
    return sorted(out, key=lambda e: e[0])


def write(path, layers, fp8):
    es = entries(layers, fp8)
    size = {"F8_E4M3": 1, "F32": 4, "BF16": 2}
    header, offset = {}, 0
    for name, dtype, shape, n, _ in es:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n * size[dtype]]}
        offset += n * size[dtype]
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, dtype, shape, n, gen in es:
            done = 0
            while done < n:
                k = min(n - done, 1 << 26)
                f.write(gen(k))
                done += k


def config(layers, fp8):
    c = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": H,
         "intermediate_size": INTER, "moe_intermediate_size": 2048, "num_hidden_layers": layers,
         "first_k_dense_replace": layers, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
         "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "q_lora_rank": QL, "kv_lora_rank": KVL,
         "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": V, "vocab_size": VOCAB,
         "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    if fp8:
        c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "weight_block_size": [BLOCK, BLOCK]}
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    for kind in ("fp8", "bf16"):
        folder = os.path.join(a.dir, kind)
        if os.path.exists(os.path.join(folder, ".complete")):
            continue
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config(a.layers, kind == "fp8"), f, indent=2)
        write(os.path.join(folder, "model.safetensors"), a.layers, kind == "fp8")
        open(os.path.join(folder, ".complete"), "w").close()
    print(a.dir)


if __name__ == "__main__":
    sys.exit(main())
