#!/usr/bin/env python3
"""A header-only DeepSeek-R1 W8A8-style checkpoint: real names and shapes, no data.

Usage: make_deepseek_r1_headers.py OUT_DIR [--layers N]

Names and shapes follow the DeepSeek-V3 architecture (61 layers, hidden 7168, vocab 129280, 128
heads, MLA with q_lora_rank 1536 / kv_lora_rank 512, first 3 layers dense with intermediate 18432,
then 256 routed experts of 2048 and one shared expert), without the MTP layer. Linear weights are
int8 with Ascend W8A8 parameters (weight_scale, weight_offset per output channel; deq_scale,
quant_bias, input_scale, input_offset on the attention projections); embedding, lm_head and norms
are bf16. Each safetensors file is its header followed by a hole (ftruncate), so the ~700 GB
checkpoint takes a few MB of disk. Stdlib only.
"""
import json
import os
import struct
import sys

H, V, HEADS = 7168, 129280, 128
Q_LORA, KV_LORA, NOPE, ROPE, VHEAD = 1536, 512, 128, 64, 128
INTER, MOE_INTER, EXPERTS, DENSE = 18432, 2048, 256, 3
SIZE = {"BF16": 2, "F32": 4, "I8": 1, "I64": 8}


def linear(p, out, inp, attention=False):
    t = [(p + ".weight", "I8", [out, inp]), (p + ".weight_scale", "F32", [out, 1]), (p + ".weight_offset", "F32", [out, 1])]
    if attention:
        t += [(p + ".deq_scale", "F32", [out]), (p + ".quant_bias", "F32", [out]),
              (p + ".input_scale", "F32", [1]), (p + ".input_offset", "F32", [1])]
    return t


def tensors(layers):
    out = [("model.embed_tokens.weight", "BF16", [V, H]), ("lm_head.weight", "BF16", [V, H]), ("model.norm.weight", "BF16", [H])]
    for l in range(layers):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", "BF16", [H]), (p + "post_attention_layernorm.weight", "BF16", [H]),
                (p + "self_attn.q_a_layernorm.weight", "BF16", [Q_LORA]), (p + "self_attn.kv_a_layernorm.weight", "BF16", [KV_LORA])]
        out += linear(p + "self_attn.q_a_proj", Q_LORA, H, True)
        out += linear(p + "self_attn.q_b_proj", HEADS * (NOPE + ROPE), Q_LORA, True)
        out += linear(p + "self_attn.kv_a_proj_with_mqa", KV_LORA + ROPE, H, True)
        out += linear(p + "self_attn.kv_b_proj", HEADS * (NOPE + VHEAD), KV_LORA, True)
        out += linear(p + "self_attn.o_proj", H, HEADS * VHEAD, True)
        if l < DENSE:
            out += linear(p + "mlp.gate_proj", INTER, H) + linear(p + "mlp.up_proj", INTER, H) + linear(p + "mlp.down_proj", H, INTER)
        else:
            out += [(p + "mlp.gate.weight", "BF16", [EXPERTS, H]), (p + "mlp.gate.e_score_correction_bias", "F32", [EXPERTS])]
            for e in range(EXPERTS):
                q = p + f"mlp.experts.{e}."
                out += linear(q + "gate_proj", MOE_INTER, H) + linear(q + "up_proj", MOE_INTER, H) + linear(q + "down_proj", H, MOE_INTER)
            out += (linear(p + "mlp.shared_experts.gate_proj", MOE_INTER, H) + linear(p + "mlp.shared_experts.up_proj", MOE_INTER, H)
                    + linear(p + "mlp.shared_experts.down_proj", H, MOE_INTER))
    return out


def write_file(path, items):
    header, offset = {}, 0
    for name, dtype, shape in items:
        n = SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    layers = int(argv[argv.index("--layers") + 1]) if "--layers" in argv else 61
    os.makedirs(out, exist_ok=True)
    items = tensors(layers)
    files = 16
    per = (len(items) + files - 1) // files
    weight_map = {}
    for i in range(files):
        name = f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        chunk = items[i * per:(i + 1) * per]
        write_file(os.path.join(out, name), chunk)
        weight_map.update({t[0]: name for t in chunk})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    config = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": H, "vocab_size": V,
              "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "num_hidden_layers": layers,
              "intermediate_size": INTER, "moe_intermediate_size": MOE_INTER, "n_routed_experts": EXPERTS,
              "n_shared_experts": 1, "first_k_dense_replace": DENSE, "q_lora_rank": Q_LORA, "kv_lora_rank": KV_LORA,
              "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": VHEAD, "tie_word_embeddings": False,
              "num_nextn_predict_layers": 1, "torch_dtype": "bfloat16"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"{len(items)} tensors in {files} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
