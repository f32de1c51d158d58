#!/usr/bin/env python3
"""Render scripts/bench.sh results (results.tsv, machine.txt, per-run outputs) as a table and docs/PERFORMANCE.md."""
import argparse
import csv
import json
import os
import re
import statistics
from collections import defaultdict

GB = 1e9
MIB = 1 << 20


def load(res):
    rows = defaultdict(list)
    with open(os.path.join(res, "results.tsv")) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            rows[(r["size"], r["case"])].append(r)
    machine = {}
    with open(os.path.join(res, "machine.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            machine[k] = v
    return rows, machine


def stats(runs):
    ok = [r for r in runs if r["rc"] == "0"]
    if not ok:
        return None
    secs = [float(r["seconds"]) for r in ok]
    return {
        "median": statistics.median(secs), "min": min(secs), "max": max(secs), "n": len(ok), "of": len(runs),
        "rss": max(int(r["peak_rss_kb"]) for r in ok) * 1024,
        "bytes": int(ok[-1]["bytes"]),
    }


def out_text(res, size, case, run):
    p = os.path.join(res, f"{size}-{case}-{run}.out")
    return open(p, errors="replace").read() if os.path.exists(p) else ""


def fmt_s(x):
    return f"{x:.2f}" if x is not None else "—"


def fmt_b(b):
    return f"{b / GB:.2f} GB" if b else "—"


def fmt_rss(b):
    return f"{b / MIB:.0f} MiB" if b else "—"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("res")
    ap.add_argument("--doc")
    a = ap.parse_args()
    rows, m = load(a.res)
    S = lambda size, case: stats(rows.get((size, case), []))
    lines = []
    P = lines.append
    checks = []

    P("| size | case | median s (min–max, runs) | bytes written | GB/s | vs floor | peak RSS | notes |")
    P("|---|---|---|---|---|---|---|---|")

    def row(size, case, label, floor=None, note=""):
        s = S(size, case)
        if s is None:
            runs = rows.get((size, case), [])
            P(f"| {size} | {label} | failed ({len(runs)} runs, rc {','.join(r['rc'] for r in runs)}) | | | | | {note} |")
            return None
        gbps = s["bytes"] / s["median"] / GB if s["bytes"] else None
        ratio = f"{s['median'] / floor['median']:.2f}×" if floor else ""
        P(f"| {size} | {label} | {s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}, {s['n']}/{s['of']}) | "
          f"{fmt_b(s['bytes'])} | {f'{gbps:.2f}' if gbps else '—'} | {ratio} | {fmt_rss(s['rss'])} | {note} |")
        return s

    budget = 512 * MIB
    for size in ("1B", "4B"):
        if not any(k[0] == size for k in rows):
            continue
        for case, label in (("dp8-fg8-hf", "all-DP 8, every fine-grained 8 (hf)"), ("tp8-vllm", "TP=8 (vllm)"),
                            ("dp16-mixed", "DP=16, emb 8 / lm_head 8 / o_proj 4 / MLP 2 (hf)")):
            if (size, case) not in rows:
                continue
            fl = row(size, "floor-" + case, f"floor for {label}: cp + openssl sha256")
            ff = row(size, "floorfsync-" + case, f"floor + fsync of each file", fl,
                     "ratio here: fsync floor / plain floor")
            s = row(size, case, f"fineshard shard {label}", fl,
                    f"{S(size, case)['median'] / ff['median']:.2f}× the fsync floor" if ff and S(size, case) else "")
            if s and fl:
                checks.append((f"{size} shard {case} ≤ 1.3× floor", s["median"] / fl["median"] <= 1.3,
                               f"{s['median'] / fl['median']:.2f}×"))
            if s:
                checks.append((f"{size} shard {case} peak RSS ≤ 512 MiB", s["rss"] <= budget, fmt_rss(s["rss"])))
        if (size, "dp8-fg8-hdf5") in rows:
            sf = S(size, "dp8-fg8-hf")
            h = S(size, "dp8-fg8-hdf5")
            note = ""
            if h and sf:
                smaller = 1 - h["bytes"] / sf["bytes"]
                mbps = sf["bytes"] / h["median"] / 1e6
                note = f"{smaller * 100:.1f}% smaller than safetensors; {mbps:.0f} MB/s of uncompressed output"
                checks.append((f"{size} HDF5 ≥ 15% smaller", smaller >= 0.15, f"{smaller * 100:.1f}%"))
                checks.append((f"{size} HDF5 ≥ 300 MB/s", mbps >= 300, f"{mbps:.0f} MB/s"))
                checks.append((f"{size} HDF5 peak RSS ≤ 512 MiB", h["rss"] <= budget, fmt_rss(h["rss"])))
            row(size, "dp8-fg8-hdf5", "fineshard shard all-DP 8 fine-grained 8, --format hdf5",
                S(size, "floor-dp8-fg8-hf"), note)
        if (size, "peer-dp8-fg8-hf") in rows:
            p = S(size, "peer-dp8-fg8-hf")
            f = S(size, "dp8-fg8-hf")
            note = ""
            if p and f:
                note = (f"peer/fineshard time {p['median'] / f['median']:.2f}×, "
                        f"fineshard/peer RSS {f['rss'] / p['rss']:.2f}")
                checks.append((f"{size} shard ≤ 1.1× peer time", f["median"] <= 1.1 * p["median"],
                               f"fineshard/peer {f['median'] / p['median']:.2f}×"))
                checks.append((f"{size} shard RSS ≤ 1/4 of peer's", f["rss"] * 4 <= p["rss"],
                               f"{f['rss'] / p['rss']:.2f}"))
            row(size, "peer-dp8-fg8-hf", "Python peer (safe_open + get_slice + numpy), all-DP 8 fine-grained 8",
                S(size, "floor-dp8-fg8-hf"), note)
        for case, base, label in (("verify", "cat-output", "verify OUT (all-DP 8 output)"),
                                  ("verify-source", "cat-source-output", "verify OUT --source CKPT")):
            if (size, case) not in rows:
                continue
            b = S(size, base)
            v = S(size, case)
            row(size, base, f"cat of the same bytes to /dev/null ({'output' if base == 'cat-output' else 'source + output'})")
            note = f"{v['median'] / b['median']:.2f}× the cat" if v and b else ""
            if v and b and case == "verify-source":
                checks.append((f"{size} verify --source ≤ 1.5× reading source + output once",
                               v["median"] <= 1.5 * b["median"], f"{v['median'] / b['median']:.2f}×"))
            if v:
                checks.append((f"{size} {case} peak RSS ≤ 512 MiB", v["rss"] <= budget, fmt_rss(v["rss"])))
            row(size, case, label, None, note)
        if size == "1B":
            f = S(size, "forward-check")
            if f:
                row(size, "forward-check", "forward-check, all-DP 8 output, 8 tokens per rank")
                checks.append((f"{size} forward-check ≤ 30 s", f["median"] <= 30, f"{f['median']:.1f} s"))
                checks.append((f"{size} forward-check peak RSS ≤ 2 GiB", f["rss"] <= 2 << 30, fmt_rss(f["rss"])))
        # Memory-limit runs (4B).
        for case, label in (("limit-dp8-fg8-hf", f"fineshard under {m.get('limiter')} 1 GiB"),
                            ("limit-peer-dp8-fg8-hf", f"peer under {m.get('limiter')} 1 GiB"),
                            ("watchdog-fineshard-dp8-fg8-hf", "fineshard, anonymous-RSS watchdog 1 GiB"),
                            ("watchdog-peer-dp8-fg8-hf", "peer, anonymous-RSS watchdog 1 GiB")):
            for r in rows.get((size, case), []):
                text = out_text(a.res, size, case, r["run"])
                mw = re.search(r"memwatch (\{.*\})", text)
                extra = ""
                if mw:
                    j = json.loads(mw.group(1))
                    pk = j["peak_bytes"]
                    extra = (f"; peak RssAnon {fmt_rss(pk['RssAnon'])}, peak VmRSS {fmt_rss(pk['VmRSS'])}"
                             + (" — killed at the limit" if j["killed"] else ""))
                err = ""
                if r["rc"] != "0" and not mw:
                    tail = [l for l in text.strip().splitlines() if l.strip()][-1:] if text.strip() else []
                    err = "; " + (tail[0][:160].replace("|", "/") if tail else "")
                verdict = "finished" if r["rc"] == "0" else f"did not finish (rc {r['rc']})"
                P(f"| {size} | {label} | {float(r['seconds']):.2f} | {fmt_b(int(r['bytes']))} | | | "
                  f"{fmt_rss(int(r['peak_rss_kb']) * 1024)} | {verdict}{extra}{err} |")
    table = "\n".join(lines)

    ck = "\n".join(f"| {name} | {'yes' if ok else '**no**'} | {val} |" for name, ok, val in checks)
    mach = (f"- CPU: {m.get('cpu')} ({m.get('cores')} cores); memory {m.get('memory')}; kernel {m.get('kernel')}; "
            f"{m.get('os')}\n- Disk: {m.get('disk_free')}, {m.get('fs')}\n- {m.get('swift')}; fineshard at {m.get('commit')}\n"
            f"- Date: {m.get('date')}; {m.get('runs')} runs per case (median; min–max shown)\n"
            f"- Memory limiter: {m.get('limiter')}\n"
            + "".join(f"- Checkpoint {k[5:]}: {v}\n" for k, v in m.items() if k.startswith("ckpt_"))
            + "".join(f"- Output {k[6:]}: {v}\n" for k, v in m.items() if k.startswith("files_")))
    print(table)
    print()
    print("| target | met | value |\n|---|---|---|\n" + ck)
    if a.doc:
        with open(a.doc, "w") as f:
            f.write(DOC.format(machine=mach, table=table, checks=ck))
        print(f"\nwrote {a.doc}")


DOC = """# Performance

Produced by `scripts/bench.sh` (see its header for options; `--with-4b` adds the ~4B checkpoint and the
memory-limit runs). Page cache warm, `sync` before every timed run, wall-clock medians.

## Machine

{machine}
## What is measured

- **Checkpoint**: `scripts/bench/make_llama.py` — seeded synthetic Llama, bf16 N(0, 0.02). 1B = TinyLlama
  shape (hidden 2048, 22 layers, 32/4 heads, intermediate 5632, vocab 32000, untied; one 2.2 GB file);
  4B = hidden 3072, 36 layers, 24/8 heads, intermediate 8192 (3.8B parameters; two files split at 5 GB
  with `model.safetensors.index.json`, like `save_pretrained`).
- **Floor**: for a configuration whose output is N bytes in K files, K `cp` of a warm N/K-byte file (same
  filesystem; coreutils uses `copy_file_range`) while `openssl dgst -sha256` hashes the same N bytes
  concurrently: the least a tool can do that writes and hashes the output. "floor + fsync" also fsyncs
  each copied file (`sync FILE`), for comparison: fineshard syncs its output's filesystem once, before the manifest.
- **fineshard**: `fineshard shard CKPT -o OUT … --no-source-hash --no-sync --quiet --json` (`--no-sync`: like the floor and the peer, it does not wait for the disk; by default shard syncs the output's filesystem once before the manifest) (output hashing on;
  default `--threads` = cores, `--memory-budget` 512 MiB).
- **Peer**: `scripts/bench/peer.py` — official `safetensors` (`safe_open` + `get_slice`) and numpy, one
  `save_file` per rank, the same tensors as fineshard's all-DP 8 / fine-grained 8 `hf` output; hashes nothing.
- **verify**: on the all-DP 8 output, against `cat` of the same bytes to /dev/null.
- **Peak RSS**: GNU time's "Maximum resident set size".

## Results

{table}

## Targets (issue 8; issue 4's peak-RSS point; issue 5's verify point)

| target | met | value |
|---|---|---|
{checks}
"""

if __name__ == "__main__":
    main()
