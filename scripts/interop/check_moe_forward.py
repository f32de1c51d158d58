#!/usr/bin/env python3
"""fineshard's forward pass against transformers, end to end on one checkpoint.

Usage: check_moe_forward.py CKPT [--fineshard BIN] [--tokens "1,2,3;4,5"] [--tolerance 1e-4]
                            [-- SHARD OPTIONS...]

Shards CKPT into a temporary folder with the given options (default: DP 4 + EP, every fine-grained
size 2), runs `fineshard forward-check --include-dense --json` (which compares every rank with
fineshard's dense pass), then runs scripts/interop/moe_oracle.py `logits` on CKPT with
$FINESHARD_ORACLE_PYTHON (transformers) on the same token lists — one per DP rank — and compares
fineshard's dense logits with transformers': max |fineshard - transformers| / max |transformers| per
sequence must be <= the tolerance. Prints one line per sequence and exits 0 when every sequence
passes and forward-check passed, 1 otherwise, 2 on bad input. Stdlib only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHARD = ["--dp", "4", "--enable-expert-parallel", "--additional-config",
                 '{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2, '
                 '"oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 2}}']


def main(argv):
    if "--" in argv:
        i = argv.index("--")
        argv, shard_options = argv[:i], argv[i + 1:]
    else:
        shard_options = DEFAULT_SHARD
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--fineshard", default=os.environ.get("FINESHARD_BIN", "fineshard"))
    p.add_argument("--tokens", default="1,2,3,4,5;6,7,8;9,10,11,12,13,14;15,16,17,18")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv[1:])
    oracle_python = os.environ.get("FINESHARD_ORACLE_PYTHON")
    if not oracle_python:
        print("check_moe_forward: set FINESHARD_ORACLE_PYTHON to the python of the venv with torch + transformers",
              file=sys.stderr)
        return 2

    out = tempfile.mkdtemp(prefix="check-moe-forward-")
    try:
        shard = subprocess.run([args.fineshard, "shard", args.ckpt, "-o", os.path.join(out, "shards"), "--quiet",
                                *shard_options])
        if shard.returncode != 0:
            print(f"check_moe_forward: fineshard shard exited {shard.returncode}", file=sys.stderr)
            return 2
        fc = subprocess.run([args.fineshard, "forward-check", os.path.join(out, "shards"), "--source", args.ckpt,
                             "--tokens", args.tokens, "--include-dense", "--json"], stdout=subprocess.PIPE)
        if fc.returncode not in (0, 1):
            print(f"check_moe_forward: fineshard forward-check exited {fc.returncode}", file=sys.stderr)
            return 2
        report = json.loads(fc.stdout)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    dense = sorted(report["dense"], key=lambda d: d["dp_rank"])
    token_lists = ";".join(",".join(str(t) for t in d["tokens"]) for d in dense)
    oracle = subprocess.run([oracle_python, os.path.join(HERE, "moe_oracle.py"), "logits", args.ckpt,
                             "--tokens", token_lists], stdout=subprocess.PIPE)
    if oracle.returncode != 0:
        print(f"check_moe_forward: moe_oracle.py logits exited {oracle.returncode}", file=sys.stderr)
        return 2
    reference = json.loads(oracle.stdout)["logits"]

    ok = fc.returncode == 0
    print(f"forward-check (sharded ranks vs fineshard's dense pass): exit {fc.returncode}")
    for d, ref in zip(dense, reference):
        rows, cols = d["shape"]
        flat_ref = [x for row in ref for x in row]
        if [len(ref), len(ref[0]) if ref else 0] != [rows, cols]:
            print(f"dp rank {d['dp_rank']}: fineshard shape {d['shape']}, transformers [{len(ref)}, {len(ref[0])}]")
            ok = False
            continue
        scale = max(abs(x) for x in flat_ref) or 1.0
        err = max(abs(a - b) for a, b in zip(d["values"], flat_ref))
        top1 = sum(
            max(range(cols), key=lambda j: d["values"][i * cols + j]) == max(range(cols), key=lambda j: ref[i][j])
            for i in range(rows))
        passed = err / scale <= args.tolerance
        ok = ok and passed
        print(f"dp rank {d['dp_rank']} tokens {d['tokens']}: fineshard dense vs transformers max abs {err:.3g}, "
              f"relative {err / scale:.3g} ({'ok' if passed else 'FAIL'}), top-1 {top1}/{rows}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
