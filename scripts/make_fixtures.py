#!/usr/bin/env python3
"""Generate deterministic test fixtures for fineshard.

Usage: python scripts/make_fixtures.py OUT_DIR        (e.g. fixtures/)

Writes
  OUT_DIR/tiny-llama/     config.json, generation_config.json, tokenizer_config.json,
                          model.safetensors (bf16, metadata {"format": "pt"})
  OUT_DIR/tiny-llama-h5/  the same non-weight files and model.h5: one dataset per tensor at
                          /model/layers/0/self_attn/q_proj/weight etc. (tensor name with '.' -> '/'),
                          bf16 stored as uint16 with string attribute dtype="bfloat16",
                          chunked (with edge chunks), shuffle + zstd level 3 (filter 32015),
                          default libver, track_times=False.
Running twice gives byte-identical files (numpy default_rng(seed=20261129)).
Needs numpy, ml_dtypes, safetensors, h5py, hdf5plugin.
"""
import json
import os
import sys

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from safetensors.numpy import save_file

SEED = 20261129

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1000,  # deliberately not a multiple of 64 (padded vocab is 1024)
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2}
TOKENIZER_CONFIG = {"model_max_length": 128, "bos_token": "<s>", "eos_token": "</s>"}


def llama_tensors(cfg, rng):
    """Return an ordered dict name -> float32 array (converted to bf16 by the caller)."""
    H = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    D = cfg["head_dim"]
    nq = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]

    def w(*shape):
        return rng.normal(0.0, 0.02, size=shape)

    def norm(n):
        return 1.0 + rng.normal(0.0, 0.05, size=(n,))

    t = {"model.embed_tokens.weight": w(V, H)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(H)
        t[p + "self_attn.q_proj.weight"] = w(nq * D, H)
        t[p + "self_attn.k_proj.weight"] = w(nkv * D, H)
        t[p + "self_attn.v_proj.weight"] = w(nkv * D, H)
        t[p + "self_attn.o_proj.weight"] = w(H, nq * D)
        t[p + "post_attention_layernorm.weight"] = norm(H)
        t[p + "mlp.gate_proj.weight"] = w(I, H)
        t[p + "mlp.up_proj.weight"] = w(I, H)
        t[p + "mlp.down_proj.weight"] = w(H, I)
    t["model.norm.weight"] = norm(H)
    t["lm_head.weight"] = w(V, H)
    return {k: np.ascontiguousarray(v.astype(np.float32).astype(ml_dtypes.bfloat16)) for k, v in t.items()}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_common(folder):
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "config.json"), CONFIG)
    write_json(os.path.join(folder, "generation_config.json"), GENERATION_CONFIG)
    write_json(os.path.join(folder, "tokenizer_config.json"), TOKENIZER_CONFIG)


def chunk_shape(shape):
    # d//3 + 5 never divides these dims evenly, so every chunked dim has an edge chunk
    # (64 -> 26: 26+26+12; 1000 -> 338: 338+338+324; 32 -> 15: 15+15+2; 128 -> 47: 47+47+34).
    return tuple(max(1, min(d, d // 3 + 5)) for d in shape)


def write_h5(path, tensors):
    import h5py
    import hdf5plugin

    if os.path.exists(path):
        os.remove(path)
    with h5py.File(path, "w", track_order=False) as f:  # default libver: HDF5 1.10 can open it
        for name, arr in tensors.items():
            if arr.dtype == ml_dtypes.bfloat16:
                data, tag = arr.view(np.uint16), "bfloat16"
            else:
                data, tag = arr, None
            ds = f.create_dataset(
                "/" + name.replace(".", "/"),
                data=data,
                chunks=chunk_shape(data.shape),
                shuffle=True,
                track_times=False,
                **hdf5plugin.Zstd(clevel=3),
            )
            if tag is not None:
                ds.attrs["dtype"] = tag


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    rng = np.random.default_rng(seed=SEED)
    tensors = llama_tensors(CONFIG, rng)

    st_dir = os.path.join(out, "tiny-llama")
    write_common(st_dir)
    st_path = os.path.join(st_dir, "model.safetensors")
    save_file(tensors, st_path, metadata={"format": "pt"})
    os.chmod(st_path, 0o644)  # safetensors' writer creates the file mode 0600

    h5_dir = os.path.join(out, "tiny-llama-h5")
    write_common(h5_dir)
    write_h5(os.path.join(h5_dir, "model.h5"), tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
