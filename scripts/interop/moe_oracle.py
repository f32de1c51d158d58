#!/usr/bin/env python3
"""transformers as the independent oracle for fineshard's MoE forward pass.

Run with the vLLM venv's python ($FINESHARD_ORACLE_PYTHON: torch 2.13 CPU + transformers 5.19).

  moe_oracle.py write FAMILY OUT [--seed N]
      FAMILY in qwen3_moe, qwen2_moe, mixtral, deepseek_v2, deepseek_v3. Builds a tiny random model with
      transformers' own class, overwrites every parameter from a seeded generator (transformers' init
      has std 0.02, which makes every logit and every routing score nearly equal), and saves it with
      save_pretrained(safe_serialization=True) in float32. Prints JSON {"family", "out", "config",
      "tensors": {name: [dtype, shape]}} — the names transformers wrote.
  moe_oracle.py logits DIR --tokens "1,2,3;4,5,6"
      Loads DIR with AutoModelForCausalLM (float32, eager attention) and prints JSON
      {"logits": [[[vocab floats] per position] per sequence]}: the last layer's logits at every
      position. Each sequence runs on its own (no padding). Any missing, unexpected or mismatched
      tensor is an error (exit 2).

Quantized checkpoints are dequantized here, in numpy, from the formats' own definitions, then loaded
into the model as float32 (not from fineshard's Swift code):
  - Ascend W8A8 (msModelSlim; quant_model_description.json next to the weights): an int8 `X.weight`
    with per-output-channel `X.weight_scale` and `X.weight_offset` ([out] or [out, 1]) is
    w[o, i] = (q[o, i] - offset[o]) * scale[o]. The activation parameters (`input_scale`, `input_offset`,
    `deq_scale`, `quant_bias`) describe the NPU's int8 activation path and are dropped: the oracle is the
    float function the weights define.
  - FP8 block (config "quantization_config" {quant_method fp8, weight_block_size [B0, B1]}): a
    float8_e4m3fn `X.weight` [R, C] with `X.weight_scale_inv` [ceil(R/B0), ceil(C/B1)] is
    w[i, j] = f32(q[i, j]) * s[i // B0, j // B1] (DeepSeek-V3's weight_dequant; edge blocks partial).
  bf16 checkpoints are upcast to float32 by from_pretrained itself.

What transformers 5.19 does with the config dialects (checked on this machine):
  - The published DeepSeek-V3/R1 config (rope_scaling {type yarn, factor, mscale, mscale_all_dim,
    original_max_position_embeddings, beta_fast, beta_slow} + top-level rope_theta, scoring_func,
    topk_method, no rope_interleave) loads: rope_scaling becomes rope_parameters (rope_type yarn,
    rope_theta inside); rope_interleave defaults to true (the published weights' interleaved rotary
    pairs); scoring_func / topk_method are kept as plain attributes but never read — DeepseekV3's router
    is always sigmoid + e_score_correction_bias for selection + group score = sum of the top two
    (noaux_tc). The softmax scale is qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2 with
    mscale(s, m) = 0.1 m ln s + 1. Also kept but never read: seq_aux, aux_loss_alpha, ep_size,
    pretraining_tp and moe_layer_freq (every layer from first_k_dense_replace on is MoE). No MTP module:
    num_nextn_predict_layers changes nothing in the forward pass.
  - save_pretrained writes rope_parameters (rope_theta and rope_type inside) and rope_interleave: true,
    and no scoring_func / topk_method; "dtype" where older configs have "torch_dtype"; for DeepSeek-V2/V3
    it writes "head_dim" = qk_rope_head_dim (16 here, not the q/k head size 32) and "qk_head_dim"
    = qk_nope_head_dim + qk_rope_head_dim: a reader must not take head_dim as the attention head
    size. The safetensors file is created mode 0600.
  - transformers >= 5 holds experts as stacked 3-D parameters (experts.gate_up_proj [E, 2I, H],
    experts.down_proj [E, H, I]) but saves and loads them under the per-expert names
    (mlp.experts.N.{gate,up,down}_proj.weight; Mixtral block_sparse_moe.experts.N.w1/w2/w3.weight and
    block_sparse_moe.gate.weight) through its conversion mapping. Qwen2-MoE adds
    mlp.shared_expert.{gate,up,down}_proj.weight and mlp.shared_expert_gate.weight [1, H] (sigmoid gate);
    Qwen3-MoE has q_norm / k_norm and no shared expert; Qwen's dense layers (mlp_only_layers) keep
    mlp.{gate,up,down}_proj. Mixtral has no dense layers.
  - DeepseekV2's router (topk_method greedy / group_limited_greedy, softmax scores, a group's score is its
    max) never renormalizes the top-k weights: norm_topk_prob is ignored, so the models written here set
    it false. DeepseekV2 always rotates interleaved pairs (view_as_complex).
"""
import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

FAMILIES = ("qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v2", "deepseek_v3")

# Shared tiny shapes: head_dim 32 (vLLM's CPU attention refuses 16), 8 experts, 2 per token, vocab 200
# (padded to 256), widths divisible by 4 so that DP 4 + EP and every fine-grained size 2 or 4 are valid.
COMMON = dict(vocab_size=200, num_hidden_layers=3, rms_norm_eps=1e-6, tie_word_embeddings=False,
              max_position_embeddings=256, bos_token_id=0, eos_token_id=1)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0}


def family_config(family):
    if family == "qwen3_moe":
        return transformers.Qwen3MoeConfig(
            hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32, intermediate_size=128,
            moe_intermediate_size=64, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
            decoder_sparse_step=1, mlp_only_layers=[0], rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            **COMMON)
    if family == "qwen2_moe":
        return transformers.Qwen2MoeConfig(
            hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            moe_intermediate_size=64, shared_expert_intermediate_size=128, num_experts=8, num_experts_per_tok=2,
            norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[0], qkv_bias=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6}, **COMMON)
    if family == "mixtral":
        return transformers.MixtralConfig(
            hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32, intermediate_size=64,
            num_local_experts=8, num_experts_per_tok=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            **COMMON)
    if family == "deepseek_v2":
        # DeepSeek-V2-Lite style: no q LoRA (plain q_proj); full V2's group-limited greedy routing.
        return transformers.DeepseekV2Config(
            hidden_size=64, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=32,
            qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16, intermediate_size=128,
            moe_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2,
            first_k_dense_replace=1, topk_method="group_limited_greedy", n_group=4, topk_group=2,
            routed_scaling_factor=1.5, norm_topk_prob=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **COMMON)
    if family == "deepseek_v3":
        return transformers.DeepseekV3Config(
            hidden_size=64, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=40, kv_lora_rank=32,
            qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16, intermediate_size=128,
            moe_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
            first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
            num_nextn_predict_layers=0, rope_parameters=dict(YARN), **COMMON)
    raise SystemExit(f"moe_oracle: unknown family {family!r} (one of {', '.join(FAMILIES)})")


def randomize(model, seed):
    """Every parameter and persistent buffer from one seeded generator, scaled so that activations,
    logits and routing scores are well spread: weights N(0, 1/fan_in), embedding N(0, 1), norms
    1 + N(0, 0.1), biases N(0, 0.1), routers and Qwen2-MoE's shared_expert_gate N(0, 0.2^2),
    e_score_correction_bias N(0, 0.05^2)."""
    g = torch.Generator().manual_seed(seed)
    named = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if "correction_bias" in n]
    with torch.no_grad():
        for name, p in sorted(named, key=lambda x: x[0]):
            shape = tuple(p.shape)
            if "correction_bias" in name:
                std, mean = 0.05, 0.0
            elif "norm" in name:
                std, mean = 0.1, 1.0
            elif "embed_tokens" in name:
                std, mean = 1.0, 0.0
            elif len(shape) == 1:
                std, mean = 0.1, 0.0
            elif name.endswith("gate.weight") or "shared_expert_gate" in name:
                std, mean = 0.2, 0.0
            else:
                std, mean = 1.0 / np.sqrt(shape[-1]), 0.0
            p.copy_(torch.randn(shape, generator=g, dtype=torch.float32) * std + mean)


def safetensors_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def tensor_table(folder):
    table = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        for name, info in safetensors_header(path).items():
            if name != "__metadata__":
                table[name] = [info["dtype"], info["shape"]]
    return table


def cmd_write(args):
    started = time.time()
    config = family_config(args.family)
    config.dtype = torch.float32
    torch.manual_seed(args.seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, args.seed)
    model.save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "config.json")) as f:
        written = json.load(f)
    json.dump({"family": args.family, "out": args.out, "config": written, "tensors": tensor_table(args.out),
               "seconds": round(time.time() - started, 2)}, sys.stdout, sort_keys=True)
    print()
    return 0


QUANT_PARAMETERS = ("weight_scale", "weight_offset", "input_scale", "input_offset", "deq_scale", "quant_bias",
                    "weight_scale_inv")


def dequantize_w8a8(name, q, tensors):
    """(q - offset) * scale, one scale and offset per output channel (row)."""
    prefix = name[: -len("weight")]
    rows = q.shape[0]
    scale = tensors[prefix + "weight_scale"].to(torch.float32).numpy().reshape(rows)
    offset = tensors.get(prefix + "weight_offset")
    offset = np.zeros(rows, np.float32) if offset is None else offset.to(torch.float32).numpy().reshape(rows)
    return (q.numpy().astype(np.float32) - offset[:, None]) * scale[:, None]


def dequantize_fp8(name, q, tensors, block):
    """f32(q[i, j]) * s[i // B0, j // B1]; the last block of a dimension may be partial."""
    b0, b1 = block
    w = q.to(torch.float32).numpy()  # float8_e4m3fn -> float32 is exact
    s = tensors[name + "_scale_inv"].to(torch.float32).numpy()
    rows, cols = w.shape
    if s.shape != (-(-rows // b0), -(-cols // b1)):
        raise SystemExit(f"moe_oracle: {name}_scale_inv has shape {s.shape}; [{rows}, {cols}] in {b0}x{b1} blocks needs "
                         f"{(-(-rows // b0), -(-cols // b1))}")
    full = np.repeat(np.repeat(s, b0, axis=0), b1, axis=1)[:rows, :cols]
    return w * full


def dense_copy(folder, tmp):
    """Writes a float32 copy of a quantized checkpoint to tmp; returns tmp, or folder when it needs none."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    w8a8 = os.path.exists(os.path.join(folder, "quant_model_description.json"))
    qc = config.get("quantization_config") or {}
    fp8 = qc.get("quant_method") == "fp8"
    if not (w8a8 or fp8):
        return folder
    tensors = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        tensors.update(load_file(path))
    out = {}
    for name, t in tensors.items():
        if name.rsplit(".", 1)[-1] in QUANT_PARAMETERS:
            continue
        if w8a8 and t.dtype == torch.int8:
            out[name] = torch.from_numpy(dequantize_w8a8(name, t, tensors))
        elif fp8 and t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            out[name] = torch.from_numpy(dequantize_fp8(name, t, tensors, qc.get("weight_block_size", [128, 128])))
        else:
            out[name] = t.to(torch.float32)
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    return tmp


def cmd_logits(args):
    sequences = [[int(x) for x in s.split(",") if x.strip()] for s in args.tokens.split(";") if s.strip()]
    tmp = tempfile.mkdtemp(prefix="moe-oracle-")
    try:
        source = dense_copy(args.dir, tmp)
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    problems = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs" and v}
    if info.get("error_msgs"):
        problems["error_msgs"] = list(map(str, info["error_msgs"]))
    if problems:
        print(f"moe_oracle: {args.dir} does not load cleanly: {json.dumps(problems)}", file=sys.stderr)
        return 2
    model.eval()
    logits = []
    with torch.no_grad():
        for seq in sequences:
            out = model(torch.tensor([seq], dtype=torch.long)).logits[0]
            logits.append(out.to(torch.float32).tolist())
    json.dump({"logits": logits}, sys.stdout)
    print()
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("family", choices=FAMILIES)
    w.add_argument("out")
    w.add_argument("--seed", type=int, default=0)
    l = sub.add_parser("logits")
    l.add_argument("dir")
    l.add_argument("--tokens", required=True)
    args = p.parse_args(argv[1:])
    transformers.logging.set_verbosity_error()
    return cmd_write(args) if args.cmd == "write" else cmd_logits(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
