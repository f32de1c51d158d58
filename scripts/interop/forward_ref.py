#!/usr/bin/env python3
"""Independent numpy reference of the dense forward pass, for checking `fineshard forward-check`.

Written from the Hugging Face model definitions, not from fineshard's code:
  - Llama family (transformers/models/llama/modeling_llama.py; Qwen2 q/k/v biases, Qwen3 q_norm/k_norm):
    embed_tokens -> [RMSNorm -> q/k/v -> RoPE (rotate_half) -> causal GQA softmax attention -> o_proj
    -> residual -> RMSNorm -> down(silu(gate) * up) -> residual] x L -> norm -> lm_head (tied: embed_tokens).
    Output: logits [T, vocab]. Int8 W8A8 linears (Ascend / msModelSlim) are dequantized per output
    channel, w = (q - weight_offset) * weight_scale; activation quantization parameters are ignored.
  - BERT (transformers/models/bert/modeling_bert.py): word + position + token_type(0) embeddings ->
    LayerNorm -> [self-attention (no mask) -> dense -> LayerNorm(+residual) -> intermediate GELU(erf)
    -> output dense -> LayerNorm(+residual)] x L. Output: last_hidden_state [T, hidden].

All arithmetic is float64 (weights widened from their stored dtype), so the reference is more exact
than fineshard's float32 and the comparison measures fineshard's error.

Usage: forward_ref.py MODEL_DIR --tokens "1,2,3;4,5"   (';' separates independent sequences)
Prints JSON: {"output": "logits"|"last_hidden_state", "batches": [{"tokens", "shape", "values"}]}.
"""
import argparse
import json
import math
import os

import numpy as np
from safetensors import safe_open


def load_weights(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    weights = {}
    for name in files:
        # framework="np" cannot read bf16; go through raw bytes with ml_dtypes instead.
        with safe_open(os.path.join(folder, name), framework="np") as f:
            for key in f.keys():
                weights[key] = (os.path.join(folder, name), key)
    return weights


class Tensors:
    """Lazy loader: tensors are read when asked for, widened to float64."""

    def __init__(self, folder):
        self.index = load_weights(folder)

    def __contains__(self, key):
        return key in self.index

    def __getitem__(self, key):
        path, name = self.index[key]
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            info = header[name]
            start, stop = info["data_offsets"]
            fh.seek(8 + n + start)
            raw = fh.read(stop - start)
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype=np.float16)
        elif dtype == "F32":
            arr = np.frombuffer(raw, dtype=np.float32)
        elif dtype == "F64":
            arr = np.frombuffer(raw, dtype=np.float64)
        elif dtype == "I8":
            arr = np.frombuffer(raw, dtype=np.int8)
        else:
            raise SystemExit(f"forward_ref: dtype {dtype} of {name} not handled")
        return arr.astype(np.float64).reshape(info["shape"])


def rms_norm(x, w, eps):
    # LlamaRMSNorm: hidden * rsqrt(mean(hidden^2) + eps) * weight
    var = np.mean(x * x, axis=-1, keepdims=True)
    return w * (x / np.sqrt(var + eps))


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def llama(t, cfg, ids):
    hidden = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or hidden // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    layers = cfg["num_hidden_layers"]
    T = len(ids)

    x = t["model.embed_tokens.weight"][ids]
    inv_freq = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    freqs = np.outer(np.arange(T, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)  # [T, hd]
    mask = np.triu(np.full((T, T), -np.inf), k=1)

    def weight(prefix):
        # Ascend / msModelSlim W8A8: an int8 weight with per-output-channel weight_scale (and
        # weight_offset), dequantized w = (q - offset) * scale. input_scale / input_offset /
        # deq_scale / quant_bias describe the NPU's int8 activation path and are not used here.
        w = t[prefix + ".weight"]
        if prefix + ".weight_scale" in t:
            out = w.shape[0]
            offset = t[prefix + ".weight_offset"].reshape(out, 1) if prefix + ".weight_offset" in t else 0.0
            w = (w - offset) * t[prefix + ".weight_scale"].reshape(out, 1)
        return w

    def linear(h, prefix):
        y = h @ weight(prefix).T
        if prefix + ".bias" in t:
            y = y + t[prefix + ".bias"]
        return y

    for layer in range(layers):
        p = f"model.layers.{layer}."
        h = rms_norm(x, t[p + "input_layernorm.weight"], eps)
        q = linear(h, p + "self_attn.q_proj").reshape(T, nh, hd).transpose(1, 0, 2)
        k = linear(h, p + "self_attn.k_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        v = linear(h, p + "self_attn.v_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        if p + "self_attn.q_norm.weight" in t:
            q = rms_norm(q, t[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, t[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = np.repeat(k, rep, axis=0)  # repeat_kv
        v = np.repeat(v, rep, axis=0)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        attn = softmax(scores) @ v  # [nh, T, hd]
        attn = attn.transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + linear(attn, p + "self_attn.o_proj")
        h = rms_norm(x, t[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, p + "mlp.gate_proj")
        up = linear(h, p + "mlp.up_proj")
        silu = gate / (1.0 + np.exp(-gate))
        x = x + linear(silu * up, p + "mlp.down_proj")
    x = rms_norm(x, t["model.norm.weight"], eps)
    head = t["lm_head.weight"] if "lm_head.weight" in t else t["model.embed_tokens.weight"]
    return x @ head.T


def bert(t, cfg, ids):
    hidden = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = hidden // nh
    eps = cfg.get("layer_norm_eps", 1e-12)
    layers = cfg["num_hidden_layers"]
    T = len(ids)
    pre = "bert." if "bert.embeddings.word_embeddings.weight" in t else ""
    erf = np.vectorize(math.erf)

    x = (t[pre + "embeddings.word_embeddings.weight"][ids]
         + t[pre + "embeddings.position_embeddings.weight"][:T]
         + t[pre + "embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, t[pre + "embeddings.LayerNorm.weight"], t[pre + "embeddings.LayerNorm.bias"], eps)

    def linear(h, prefix):
        return h @ t[prefix + ".weight"].T + t[prefix + ".bias"]

    for layer in range(layers):
        p = f"{pre}encoder.layer.{layer}."
        q = linear(x, p + "attention.self.query").reshape(T, nh, hd).transpose(1, 0, 2)
        k = linear(x, p + "attention.self.key").reshape(T, nh, hd).transpose(1, 0, 2)
        v = linear(x, p + "attention.self.value").reshape(T, nh, hd).transpose(1, 0, 2)
        ctx = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd)) @ v
        ctx = ctx.transpose(1, 0, 2).reshape(T, hidden)
        a = layer_norm(linear(ctx, p + "attention.output.dense") + x,
                       t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps)
        inter = linear(a, p + "intermediate.dense")
        inter = 0.5 * inter * (1.0 + erf(inter / math.sqrt(2.0)))
        x = layer_norm(linear(inter, p + "output.dense") + a,
                       t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    t = Tensors(args.model)
    batches = [[int(i) for i in b.split(",")] for b in args.tokens.split(";")]
    is_bert = cfg.get("model_type") == "bert"
    out = []
    for ids in batches:
        y = bert(t, cfg, ids) if is_bert else llama(t, cfg, ids)
        out.append({"tokens": ids, "shape": list(y.shape), "values": y.reshape(-1).tolist()})
    print(json.dumps({"output": "last_hidden_state" if is_bert else "logits", "batches": out}))


if __name__ == "__main__":
    main()
