#!/usr/bin/env python3
"""A DeepSeek-R1 W8A8 checkpoint at real width with a few layers and random data in every tensor.

Usage: make_r1_layers.py OUT [--layers 2] [--seed 0] [--max-file-size 4e9] [--force] [--check]

The per-layer benchmark of issue 13 ("Real size"): DeepSeek-R1's real layer widths (hidden 7168, vocab
129280, 128 MLA heads with q/kv LoRA ranks 1536/512, qk_nope 128 / qk_rope 64 / v_head 128, dense
intermediate 18432, 256 routed experts of 2048 and one shared expert) with --layers layers: layer 0 dense,
every later one MoE (first_k_dense_replace 1). Tensor names, shapes and dtypes are those of
scripts/make_deepseek_r1_headers.py (imported, not copied): int8 linear weights with per-output-channel
weight_scale / weight_offset (F32 [out, 1]); the attention projections also carry the static W8A8
activation parameters (deq_scale, quant_bias, input_scale, input_offset); experts and MLPs are dynamic
W8A8; embedding, lm_head, norms and the router are bf16, e_score_correction_bias F32. No MTP layer.

Data (seeded; each tensor from its own generator keyed by (seed, tensor name), so a tensor's bytes do not
depend on the file split):
  int8 weights      uniform over all 256 values (std ~73.9);
  weight_scale      1 / (73.9 * sqrt(in)) * U(0.75, 1.25): each linear maps unit-variance inputs to
                    ~unit-variance outputs, so activations stay O(1) through both layers;
  weight_offset     integers in [-3, 3] (dequantized w = (q - offset) * scale);
  input_scale       U(0.01, 0.05); input_offset integers in [-8, 8]; deq_scale = input_scale *
                    weight_scale; quant_bias integers in [-1000, 1000] (as F32, the header script's dtype);
  embed_tokens      U with std 1; lm_head and the router (mlp.gate) U with std 1/sqrt(7168), so router
                    logits are ~N(0, 1) and sigmoid scores spread over (0.1, 0.9) — expert choices have
                    real margins, not ties;
  e_score_correction_bias  U(-0.05, 0.05); norms 1 + U(-0.2, 0.2).

Written streaming, tensor by tensor in chunks (peak RSS ~100 MB): the header of each file first, then the
data. Files are cut at --max-file-size like save_pretrained (model-0000i-of-0000n.safetensors +
model.safetensors.index.json), next to config.json (the published DeepSeek-R1 config, with
num_hidden_layers, first_k_dense_replace 1, no MTP layer, and the FP8 quantization_config removed since
the weights are int8) and quant_model_description.json (msModelSlim's per-tensor description:
"W8A8" for the attention projections, "W8A8_DYNAMIC" for MLPs and experts, "FLOAT" otherwise).

OUT is built as OUT.partial and renamed; a COMPLETE marker records the parameters and generation time.
An OUT whose COMPLETE matches --layers, --seed and --max-file-size is kept as it is (use --force);
--check only tells whether it is there (exit 0) or not (exit 1).
Prints OUT on stdout.
"""
import argparse
import json
import os
import resource
import shutil
import struct
import sys
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import make_deepseek_r1_headers as r1  # noqa: E402  (names, shapes and dtypes of every tensor)
from make_llama import to_bf16_bits  # noqa: E402

FORMAT = 1  # bump when the data recipe changes, so cached checkpoints are rebuilt
CHUNK = 1 << 22  # elements per generated chunk: 16 MiB of float32 at most
INT8_STD = float(np.sqrt((256.0 ** 2 - 1) / 12))  # std of a byte uniform over [-128, 127]
NUMPY = {"I8": np.int8, "F32": np.float32}

# The published DeepSeek-R1 config.json (deepseek-ai/DeepSeek-R1), minus its FP8 quantization_config.
R1_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": r1.H,
    "initializer_range": 0.02,
    "intermediate_size": r1.INTER,
    "kv_lora_rank": r1.KV_LORA,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": r1.MOE_INTER,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": r1.EXPERTS,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": r1.HEADS,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": r1.HEADS,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": r1.Q_LORA,
    "qk_nope_head_dim": r1.NOPE,
    "qk_rope_head_dim": r1.ROPE,
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
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "v_head_dim": r1.VHEAD,
    "vocab_size": r1.V,
}


def tensor_list(layers):
    """(name, dtype, shape) in state-dict order: embedding, layers (0 dense, then MoE), norm, lm_head.

    Every layer is a copy of the header script's layer 0 (dense) or layer r1.DENSE (its first MoE layer)
    with the index renumbered, so names, shapes and dtypes stay exactly the header script's.
    """
    reference = r1.tensors(r1.DENSE + 1)
    top = {t[0]: t for t in reference if not t[0].startswith("model.layers.")}

    def layer(source, index):
        old, new = f"model.layers.{source}.", f"model.layers.{index}."
        return [(new + n[len(old):], d, s) for n, d, s in reference if n.startswith(old)]

    out = [top["model.embed_tokens.weight"]]
    for i in range(layers):
        out += layer(0 if i == 0 else r1.DENSE, i)
    return out + [top["model.norm.weight"], top["lm_head.weight"]]


def nbytes(dtype, shape):
    n = r1.SIZE[dtype]
    for d in shape:
        n *= d
    return n


def rng_for(seed, name):
    return np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))


def uniform(rng, n, lo, hi):
    """n float32 values uniform in [lo, hi), from 24 random bits each (fast even on a loaded machine)."""
    bits = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    f = (bits >> np.uint32(8)).astype(np.float32)
    f *= np.float32((hi - lo) / (1 << 24))
    f += np.float32(lo)
    return f


def integers(rng, n, lo, hi):
    """n float32 integers in [lo, hi]."""
    return np.floor(uniform(rng, n, lo, hi + 1)).astype(np.float32)


class Data:
    """The values of every tensor, by name; shapes come from the tensor table."""

    def __init__(self, seed, table):
        self.seed, self.shape = seed, {n: s for n, _, s in table}

    def fan_in(self, prefix):
        return self.shape[prefix + ".weight"][1]

    def small(self, name):
        """A per-channel or per-tensor parameter or a bias, whole (at most 32768 values)."""
        rng, n = rng_for(self.seed, name), int(np.prod(self.shape[name]))
        prefix, _, suffix = name.rpartition(".")
        if suffix == "weight_scale":
            base = 1.0 / (INT8_STD * np.sqrt(self.fan_in(prefix)))
            return uniform(rng, n, 0.75 * base, 1.25 * base)
        if suffix == "weight_offset":
            return integers(rng, n, -3, 3)
        if suffix == "input_scale":
            return uniform(rng, n, 0.01, 0.05)
        if suffix == "input_offset":
            return integers(rng, n, -8, 8)
        if suffix == "deq_scale":
            return (self.small(prefix + ".input_scale")[0] * self.small(prefix + ".weight_scale")).astype(np.float32)
        if suffix == "quant_bias":
            return integers(rng, n, -1000, 1000)
        if suffix == "e_score_correction_bias":
            return uniform(rng, n, -0.05, 0.05)
        raise ValueError(f"no data recipe for {name}")

    def float_range(self, name):
        """(lo, hi) of a bf16 tensor's uniform values."""
        h = self.shape["model.embed_tokens.weight"][1]
        if name.endswith("norm.weight"):
            return 0.8, 1.2
        a = np.sqrt(3.0)  # a uniform over [-a*s, a*s] has std s
        if name == "model.embed_tokens.weight":
            return -a, a
        if name == "lm_head.weight" or name.endswith("mlp.gate.weight"):
            return -a / np.sqrt(h), a / np.sqrt(h)
        raise ValueError(f"no data recipe for {name}")

    def chunks(self, name, dtype):
        """The tensor's bytes, in chunks."""
        n = int(np.prod(self.shape[name]))
        rng = rng_for(self.seed, name)
        if dtype == "I8":
            for start in range(0, n, 8 * CHUNK):
                k = min(8 * CHUNK, n - start)
                yield rng.bit_generator.random_raw((k + 7) // 8).view(np.uint8)[:k]
        elif dtype == "BF16":
            lo, hi = self.float_range(name)
            for start in range(0, n, CHUNK):
                yield to_bf16_bits(uniform(rng, min(CHUNK, n - start), lo, hi))
        elif dtype == "F32":
            yield self.small(name)
        else:
            raise ValueError(f"no data recipe for {name} ({dtype})")


def write_file(path, items, data):
    """Header first, then every tensor's bytes in chunks (offsets follow the list order)."""
    meta, off = {}, 0
    for name, dtype, shape in items:
        n = nbytes(dtype, shape)
        meta[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header = json.dumps({"__metadata__": {"format": "pt"}, **meta}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb", buffering=0) as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for name, dtype, shape in items:
            written = 0
            for chunk in data.chunks(name, dtype):
                b = chunk.tobytes()
                f.write(b)
                written += len(b)
            if written != nbytes(dtype, shape):
                raise RuntimeError(f"{name}: wrote {written} bytes, expected {nbytes(dtype, shape)}")
    return off


def description(table):
    """msModelSlim's quant_model_description.json: the scheme of every tensor."""
    out = {"model_quant_type": "W8A8_DYNAMIC", "version": "1.0.0"}
    quantized = {n[: -len(".weight")] for n, d, _ in table if d == "I8"}
    for name, _, _ in table:
        prefix = name.rpartition(".")[0]
        if prefix in quantized:
            out[name] = "W8A8" if ".self_attn." in name else "W8A8_DYNAMIC"
        else:
            out[name] = "FLOAT"
    return out


def read_marker(path):
    try:
        with open(path) as f:
            return dict(kv.split("=", 1) for kv in f.read().split())
    except (FileNotFoundError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2, help="layers: 0 is dense, the others MoE (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-file-size", type=float, default=4e9, help="bytes per safetensors file (default 4e9)")
    ap.add_argument("--force", action="store_true", help="rebuild even when OUT is complete")
    ap.add_argument("--check", action="store_true", help="only say whether OUT is complete (exit 0) or not (exit 1)")
    a = ap.parse_args()
    if a.layers < 1:
        ap.error("--layers must be at least 1")

    out = os.path.abspath(a.out)
    want = {"format": str(FORMAT), "layers": str(a.layers), "seed": str(a.seed), "max_file_size": str(int(a.max_file_size))}
    marker = read_marker(os.path.join(out, "COMPLETE"))
    complete = marker is not None and all(marker.get(k) == v for k, v in want.items())
    if a.check:
        sys.exit(0 if complete else 1)
    if complete and not a.force:
        print(f"cached {out}: {marker.get('bytes')} bytes, generated in {marker.get('seconds')} s", file=sys.stderr)
        print(out)
        return
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()

    table = tensor_list(a.layers)
    data = Data(a.seed, table)
    groups, cur, size = [], [], 0
    for t in table:
        n = nbytes(t[1], t[2])
        if cur and size + n > a.max_file_size:
            groups.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += n
    groups.append(cur)

    total, weight_map = 0, {}
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        total += write_file(os.path.join(tmp, name), group, data)
        weight_map.update({t[0]: name for t in group})
        print(f"  {name}: {len(group)} tensors, {time.time() - t0:.0f} s", file=sys.stderr)
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    config = dict(R1_CONFIG, num_hidden_layers=a.layers, first_k_dense_replace=1, num_nextn_predict_layers=0)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(tmp, "quant_model_description.json"), "w") as f:
        json.dump(description(table), f, indent=2)

    seconds = time.time() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss, cpu = usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        f.write(" ".join(f"{k}={v}" for k, v in want.items())
                + f" tensors={len(table)} files={len(groups)} bytes={total} seconds={seconds:.1f} cpu_seconds={cpu:.1f}"
                + f" peak_rss={rss}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"generated {out}: {len(table)} tensors in {len(groups)} files, {total / 1e9:.2f} GB in {seconds:.0f} s, "
          f"CPU {cpu:.0f} s, peak RSS {rss / 2**20:.0f} MiB", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
