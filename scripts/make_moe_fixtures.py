#!/usr/bin/env python3
"""Generate the tiny DeepSeek-V3-shaped MoE fixtures (deterministic, seeded).

Usage: python scripts/make_moe_fixtures.py OUT_DIR        (e.g. fixtures/)

Writes three checkpoints of one model (numpy default_rng(seed=20261201); running twice gives
byte-identical files; needs numpy and ml_dtypes only):

  OUT_DIR/tiny-deepseek-v3/       config.json in the published DeepSeek-V3/R1 dialect (rope_scaling yarn +
                                  rope_theta, scoring_func sigmoid, topk_method noaux_tc, no auto_map),
                                  generation_config.json, model.safetensors (bf16; the router's
                                  e_score_correction_bias F32), the published tensor names.
  OUT_DIR/tiny-deepseek-v3-w8a8/  Ascend W8A8 as msModelSlim writes it for DeepSeek: the attention projections
                                  static "W8A8" (int8 weight, F32 weight_scale / weight_offset [out, 1],
                                  per-tensor F32 input_scale / input_offset [1], F32 deq_scale [out],
                                  I32 quant_bias [out]); dense MLP, routed and shared experts "W8A8_DYNAMIC"
                                  (int8 weight, weight_scale / weight_offset [out, 1]); everything else bf16
                                  ("FLOAT"). quant_model_description.json maps every tensor name to its type,
                                  plus "model_quant_type": "W8A8_DYNAMIC" and "version" — the flat format
                                  vllm-ascend's AscendModelSlimConfig reads (quantization/modelslim_config.py:
                                  quant_description[prefix + ".weight"] gives a layer's scheme; the
                                  schemes' parameters from quantization/methods/w8a8_static.py and
                                  w8a8_dynamic.py), as in msModelSlim's own example description.
                                  Weight offsets are small non-zero integers (asymmetric), so that a
                                  dequantization that ignores them is wrong: w = (q - offset) * scale.
  OUT_DIR/tiny-deepseek-v3-fp8/   DeepSeek-V3's own FP8 format: every linear layer of the decoder (not the
                                  router, embedding, lm_head or norms) float8_e4m3fn with F32
                                  weight_scale_inv [ceil(out/B), ceil(in/B)], w = f32(q) * s[i/B, j/B], and
                                  config.json "quantization_config" {quant_method fp8, fmt e4m3,
                                  activation_scheme dynamic, weight_block_size [B, B]} with B = 16.

Shapes (chosen so that DP 4 + EP and every fine-grained size 2 or 4 are valid, and every such cut of an FP8
weight falls on a multiple of B): hidden 64, 4 heads, q_lora_rank 40, kv_lora_rank 32, qk_nope 16,
qk_rope 16 (q/k head 32), v_head 16, 3 layers (layer 0 dense, intermediate 128; layers 1-2 MoE: 8 routed
experts of 64, 2 per token, n_group 4, topk_group 2, 1 shared expert), vocab 200 (padded to 256),
no MTP layer (num_nextn_predict_layers 0). q_lora_rank 40 is not a multiple of 16: in the FP8 variant
q_a_proj [40, 64] has a partial last row block (8 rows) and q_b_proj [128, 40] a partial last column
block (8 columns); neither dimension is ever cut (q_a_proj is replicated, q_b_proj is cut by heads along
its rows).

Weights are random normal with std 1/sqrt(fan_in) (embedding 1.0, norms 1 + N(0, 0.1)), the router with
std 0.2 and e_score_correction_bias N(0, 0.05), so that routing scores are well separated and the bias
changes some choices.
"""
import json
import os
import sys

import ml_dtypes
import numpy as np

SEED = 20261201
FP8_BLOCK = 16

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "kv_lora_rank": 32,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 64,
    "moe_layer_freq": 1,
    "n_group": 4,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 4,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 3,
    "num_key_value_heads": 4,
    "num_nextn_predict_layers": 0,
    "pretraining_tp": 1,
    "q_lora_rank": 40,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 16,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 2,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "v_head_dim": 16,
    "vocab_size": 200,  # not a multiple of 64: padded to 256
}
GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "do_sample": False}


def float_tensors(cfg, rng):
    """name -> float32 array with the published DeepSeek-V3 tensor names, in a fixed order."""
    H, V, nh = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"]
    qr, kvr = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    I, MI, E = cfg["intermediate_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]

    def lin(out, inp):
        return rng.normal(0.0, 1.0 / np.sqrt(inp), size=(out, inp))

    def norm(n):
        return 1.0 + rng.normal(0.0, 0.1, size=(n,))

    def mlp(p, width):
        return {p + "gate_proj.weight": lin(width, H), p + "up_proj.weight": lin(width, H), p + "down_proj.weight": lin(H, width)}

    t = {"model.embed_tokens.weight": rng.normal(0.0, 1.0, size=(V, H))}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(H)
        t[p + "self_attn.q_a_proj.weight"] = lin(qr, H)
        t[p + "self_attn.q_a_layernorm.weight"] = norm(qr)
        t[p + "self_attn.q_b_proj.weight"] = lin(nh * (nope + rope), qr)
        t[p + "self_attn.kv_a_proj_with_mqa.weight"] = lin(kvr + rope, H)
        t[p + "self_attn.kv_a_layernorm.weight"] = norm(kvr)
        t[p + "self_attn.kv_b_proj.weight"] = lin(nh * (nope + vd), kvr)
        t[p + "self_attn.o_proj.weight"] = lin(H, nh * vd)
        t[p + "post_attention_layernorm.weight"] = norm(H)
        if i < cfg["first_k_dense_replace"]:
            t.update(mlp(p + "mlp.", I))
        else:
            t[p + "mlp.gate.weight"] = rng.normal(0.0, 0.2, size=(E, H))
            t[p + "mlp.gate.e_score_correction_bias"] = rng.normal(0.0, 0.05, size=(E,))
            for e in range(E):
                t.update(mlp(p + f"mlp.experts.{e}.", MI))
            t.update(mlp(p + "mlp.shared_experts.", MI * cfg["n_shared_experts"]))
    t["model.norm.weight"] = norm(H)
    t["lm_head.weight"] = lin(V, H)
    return {k: v.astype(np.float32) for k, v in t.items()}


def bf16_checkpoint(ft):
    """The bf16 checkpoint: every tensor bf16 except the correction bias (F32, as DeepSeek-V3 ships it)."""
    return {k: v if k.endswith("e_score_correction_bias") else v.astype(ml_dtypes.bfloat16) for k, v in ft.items()}


def is_decoder_linear(name):
    """The linear layers DeepSeek quantizes: attention projections and every MLP (dense, expert, shared)."""
    return name.endswith("_proj.weight") or name.endswith("kv_a_proj_with_mqa.weight")


def is_attention_linear(name):
    return ".self_attn." in name and is_decoder_linear(name)


def w8a8_checkpoint(ft, rng):
    """Ascend W8A8 (msModelSlim): per-output-channel int8 with scale and integer offset."""
    bf = bf16_checkpoint(ft)
    out, desc = {}, {"model_quant_type": "W8A8_DYNAMIC", "version": "1.0.0"}
    for name, w in ft.items():
        if not is_decoder_linear(name):
            out[name] = bf[name]
            desc[name] = "FLOAT"
            continue
        prefix = name[: -len("weight")]
        kind = "W8A8" if is_attention_linear(name) else "W8A8_DYNAMIC"
        rows = w.shape[0]
        scale = (np.abs(w).max(axis=1) / 120.0).astype(np.float32)
        offset = rng.integers(-4, 5, size=rows).astype(np.float32)
        q = np.clip(np.rint(w / scale[:, None]) + offset[:, None], -128, 127).astype(np.int8)
        out[name] = q
        out[prefix + "weight_scale"] = scale.reshape(rows, 1)
        out[prefix + "weight_offset"] = offset.reshape(rows, 1)
        params = ["weight", "weight_scale", "weight_offset"]
        if kind == "W8A8":
            # Static activation quantization: x_q = round(x / input_scale) + input_offset; the NPU computes
            # int32 (q - weight_offset)·x_q, adds quant_bias = -input_offset·Σ_j (q - weight_offset) and
            # rescales by deq_scale = input_scale · weight_scale. A float32 reference never reads these.
            input_scale = np.float32(rng.uniform(0.01, 0.05))
            input_offset = np.float32(rng.integers(-8, 9))
            wq = q.astype(np.int64) - offset.astype(np.int64)[:, None]
            out[prefix + "input_scale"] = np.array([input_scale], dtype=np.float32)
            out[prefix + "input_offset"] = np.array([input_offset], dtype=np.float32)
            out[prefix + "deq_scale"] = (scale * input_scale).astype(np.float32)
            out[prefix + "quant_bias"] = (-int(input_offset) * wq.sum(axis=1)).astype(np.int32)
            params += ["input_scale", "input_offset", "deq_scale", "quant_bias"]
        for p in params:
            desc[prefix + p] = kind
    return out, desc


def fp8_checkpoint(ft, block):
    """DeepSeek-V3 FP8: float8_e4m3fn weights, one F32 weight_scale_inv per block x block tile."""
    bf = bf16_checkpoint(ft)
    out = {}
    fmax = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)
    for name, w in ft.items():
        if not is_decoder_linear(name):
            out[name] = bf[name]
            continue
        rows, cols = w.shape
        br, bc = -(-rows // block), -(-cols // block)
        s = np.zeros((br, bc), dtype=np.float32)
        q = np.zeros_like(w)
        for i in range(br):
            for j in range(bc):
                tile = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
                s[i, j] = np.float32(np.abs(tile).max() / fmax)
                q[i * block:(i + 1) * block, j * block:(j + 1) * block] = tile / s[i, j]
        out[name] = q.astype(ml_dtypes.float8_e4m3fn)
        out[name + "_scale_inv"] = s
    return out


ST_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.int8): "I8",
    np.dtype(np.int32): "I32",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(ml_dtypes.float8_e4m3fn): "F8_E4M3",
}


def save_safetensors(tensors, path):
    """A safetensors file as the reference library writes it: names sorted, header padded to 8 bytes."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.tobytes()
        header[name] = {"dtype": ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for raw in blobs:
            f.write(raw)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_checkpoint(folder, tensors, config, extra=None):
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "config.json"), config)
    write_json(os.path.join(folder, "generation_config.json"), GENERATION_CONFIG)
    for name, obj in (extra or {}).items():
        write_json(os.path.join(folder, name), obj)
    save_safetensors(tensors, os.path.join(folder, "model.safetensors"))


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    rng = np.random.default_rng(seed=SEED)
    ft = float_tensors(CONFIG, rng)

    write_checkpoint(os.path.join(out, "tiny-deepseek-v3"), bf16_checkpoint(ft), CONFIG)

    w8a8, desc = w8a8_checkpoint(ft, rng)
    write_checkpoint(os.path.join(out, "tiny-deepseek-v3-w8a8"), w8a8, CONFIG, {"quant_model_description.json": desc})

    fp8_config = dict(CONFIG)
    fp8_config["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
    }
    write_checkpoint(os.path.join(out, "tiny-deepseek-v3-fp8"), fp8_checkpoint(ft, FP8_BLOCK), fp8_config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
