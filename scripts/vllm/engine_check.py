#!/usr/bin/env python3
"""Runs real vLLM engines one after another in this process and records what they generate; compares runs.

Usage:
  engine_check.py run RESULTS.json NAME=DIR:LOAD_FORMAT:TP [...]
      Starts one engine per job (LLM(model=DIR, load_format=LOAD_FORMAT, tensor_parallel_size=TP)), greedy
      decodes the fixed prompts with SamplingParams(max_tokens=3, temperature=0, logprobs=5) and writes
      {NAME: {"tokens": [[...] per prompt], "logprobs": [[{token: logprob} per position] per prompt],
      "seconds": start-up}} to RESULTS.json (merged with what is there). Data parallelism comes from the
      environment (VLLM_DP_RANK, VLLM_DP_SIZE, VLLM_DP_MASTER_IP/PORT), as in vLLM's offline DP example.
  engine_check.py compare TOL REFERENCE=RUN [...] RESULTS.json [...]
      Compares every RUN with its REFERENCE: the generated token ids must be equal and the top-5
      log-probabilities within TOL (a token may leave the top 5 only when tied with the 5th within TOL).
      Prints one line per run; exits 1 on a difference, 2 on a missing run.

Engines run in eager mode, float32, without a tokenizer (token-id prompts), max_model_len 256.
"""
import gc
import json
import os
import sys
import time

PROMPTS = [[1, 5, 9, 200, 31], [7, 700, 42, 3, 999, 12, 64, 88]]


def run(results_path, jobs):
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    params = SamplingParams(max_tokens=3, temperature=0, logprobs=5, detokenize=False)
    for job in jobs:
        name, spec = job.split("=", 1)
        folder, load_format, tp = spec.rsplit(":", 2)
        tp = int(tp)
        kwargs = dict(model=folder, dtype="float32", enforce_eager=True, max_model_len=256, skip_tokenizer_init=True,
                      load_format=load_format, tensor_parallel_size=tp, seed=0)
        dp = int(os.environ.get("FINESHARD_DP", "1"))
        if dp > 1:
            # One process per DP rank under torchrun (vLLM's offline SPMD data parallelism).
            kwargs.update(data_parallel_size=dp, distributed_executor_backend="external_launcher")
            name += f"-r{os.environ['RANK']}"
        elif tp > 1:
            kwargs["distributed_executor_backend"] = "mp"
        start = time.time()
        print(f"engine_check: starting {name}: {folder} load_format={load_format} TP {tp}"
              f" DP rank {os.environ.get('VLLM_DP_RANK', 0)} of {os.environ.get('VLLM_DP_SIZE', 1)}", file=sys.stderr, flush=True)
        if name.startswith("refuse-"):
            # The load must fail with the loader's refusal (a folder made for another configuration).
            try:
                LLM(**kwargs)
            except Exception as e:  # noqa: BLE001 - whatever vLLM wraps it in, the message must say why
                text = f"{type(e).__name__}: {e}"
                ok = "was not made for this engine" in text
                results[name] = {"refused": ok, "message": text[-600:], "seconds": round(time.time() - start, 1)}
                print(f"engine_check: {name}: refused: {text[-400:]}", file=sys.stderr, flush=True)
            else:
                results[name] = {"refused": False, "message": "the engine started"}
            with open(results_path, "w") as f:
                json.dump(results, f, indent=1, sort_keys=True)
            gc.collect()
            continue
        llm = LLM(**kwargs)
        seconds = time.time() - start
        # Token ids inside a small vocabulary (the MoE test models have 200 tokens).
        vocab = llm.model_config.get_vocab_size()
        prompts = [[t % vocab for t in p] for p in PROMPTS]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        record = {"tokens": [], "logprobs": [], "seconds": round(seconds, 1)}
        if load_format == "fineshard" and tp == 1:
            from fineshard_vllm.loader import LAST_LOAD  # the loader ran in this process
            record["loaded"] = dict(LAST_LOAD)
        for out in outputs:
            c = out.outputs[0]
            record["tokens"].append(list(c.token_ids))
            record["logprobs"].append([{str(t): lp.logprob for t, lp in pos.items()} for pos in c.logprobs])
        results[name] = record
        print(f"engine_check: {name}: started in {seconds:.1f} s, tokens {record['tokens']}", file=sys.stderr, flush=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        del llm
        gc.collect()
    return 0


def top5_diff(ref, got, tol):
    """Largest |logprob difference| over tokens in both top-5s; None when the sets differ beyond a tie."""
    worst = 0.0
    for a, b in ((ref, got), (got, ref)):
        floor = min(b.values())
        for t, lp in a.items():
            if t in b:
                worst = max(worst, abs(lp - b[t]))
            elif abs(lp - floor) > tol:
                return None
    return worst


def compare(tol, pairs, results_paths):
    results = {}
    for p in results_paths:
        with open(p) as f:
            results.update(json.load(f))
    failed = 0
    for name in sorted(n for n in results if n.startswith("refuse-")):
        r = results[name]
        print(f"{'ok' if r['refused'] else 'FAIL'} {name}: {'refused' if r['refused'] else 'NOT refused'}: {r['message'][-300:]}")
        failed += not r["refused"]
    for pair in pairs:
        ref_name, name = pair.split("=", 1)
        if ref_name not in results or name not in results:
            print(f"engine_check: missing run {ref_name if ref_name not in results else name}", file=sys.stderr)
            return 2
        ref, got = results[ref_name], results[name]
        problems, worst, compared = [], 0.0, 0
        if got["tokens"] != ref["tokens"]:
            problems.append(f"tokens {got['tokens']} != {ref['tokens']}")
        for i, (rp, gp) in enumerate(zip(ref["logprobs"], got["logprobs"])):
            for j, (r, g) in enumerate(zip(rp, gp)):
                d = top5_diff(r, g, tol)
                compared += 1
                if d is None:
                    problems.append(f"prompt {i} position {j}: top-5 tokens {sorted(g)} != {sorted(r)}")
                elif d > tol:
                    problems.append(f"prompt {i} position {j}: logprob differs by {d:.3g} > {tol}")
                else:
                    worst = max(worst, d)
        loaded = got.get("loaded")
        if loaded and name.rsplit("-r", 1)[-1].isdigit() and loaded.get("global_rank") != int(name.rsplit("-r", 1)[-1]):
            problems.append(f"loaded global rank {loaded.get('global_rank')}, expected {name.rsplit('-r', 1)[-1]}")
        status = "FAIL" if problems else "ok"
        print(f"{status} {name} vs {ref_name}: tokens {got['tokens']}, {compared} positions x top-5, "
              f"max |logprob diff| {worst:.2e}" + (f", read {loaded['files']}" if loaded else "") + (": " + "; ".join(problems) if problems else ""))
        failed += bool(problems)
    return 1 if failed else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "run":
        return run(argv[2], argv[3:])
    if len(argv) >= 4 and argv[1] == "compare":
        pairs = [a for a in argv[3:] if "=" in a]
        paths = [a for a in argv[3:] if "=" not in a]
        return compare(float(argv[2]), pairs, paths)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
