#!/usr/bin/env python3
"""Writes small random Llama-family checkpoints with transformers (the vLLM venv's), for the real-engine test.

Usage: make_models.py OUT_DIR [NAME ...]

Every model has head_dim 32 (vLLM's CPU attention refuses 16), vocab 1000 (padded to 1024 by both vLLM
and fineshard), 2 layers, float32 weights, seeded. Each lands in OUT_DIR/NAME as a Hugging Face folder
(config.json + model.safetensors). Prints the folders written, one per line.
"""
import os
import sys

import torch
import transformers

COMMON = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5)

# name: (config class, extra config). Covers GQA with kv replication at TP 2 (one kv head), biases,
# tied and untied heads, q/k norms and an explicit head_dim.
MODELS = {
    # Llama, untied head, a single kv head: TP 2 replicates it on both ranks.
    "llama": (transformers.LlamaConfig, dict(num_key_value_heads=1, tie_word_embeddings=False)),
    # Mistral, untied, 2 kv heads.
    "mistral": (transformers.MistralConfig, dict(num_key_value_heads=2, tie_word_embeddings=False,
                                                 sliding_window=None)),
    # Qwen2: q/k/v biases, tied head.
    "qwen2": (transformers.Qwen2Config, dict(num_key_value_heads=2, tie_word_embeddings=True)),
    # Qwen3: q/k norms, explicit head_dim (64 ≠ hidden/heads), untied, one kv head.
    "qwen3": (transformers.Qwen3Config, dict(num_key_value_heads=1, head_dim=64, tie_word_embeddings=False)),
}


def make(name, out):
    cls, extra = MODELS[name]
    config = cls(**COMMON, **extra)
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        # Larger than the init default so that logits spread and greedy tokens are not near-ties.
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            elif "norm" not in n:  # biases; norms keep their ones
                p.normal_(0.0, 0.05)
    path = os.path.join(out, name)
    model.save_pretrained(path, safe_serialization=True)
    return path


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    names = sys.argv[2:] or list(MODELS)
    for n in names:
        print(make(n, sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
