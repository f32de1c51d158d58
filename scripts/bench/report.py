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


def cpu_seconds(res, runs):
    """Median user + system seconds of the runs (GNU time's -v output next to each run)."""
    vals = []
    for r in runs:
        p = os.path.join(res, f"{r['size']}-{r['case']}-{r['run']}.time")
        if r["rc"] != "0" or not os.path.exists(p):
            continue
        t = open(p).read()
        u = re.search(r"User time \(seconds\): ([0-9.]+)", t)
        sy = re.search(r"System time \(seconds\): ([0-9.]+)", t)
        if u and sy:
            vals.append(float(u.group(1)) + float(sy.group(1)))
    return statistics.median(vals) if vals else None


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
            cs, cf = cpu_seconds(a.res, rows.get((size, case), [])), cpu_seconds(a.res, rows.get((size, "floor-" + case), []))
            s = row(size, case, f"fineshard shard {label}", fl,
                    (f"{S(size, case)['median'] / ff['median']:.2f}× the fsync floor" if ff and S(size, case) else "")
                    + (f"; CPU (user + sys) {cs:.2f} s, floor's {cf:.2f} s ({cs / cf:.2f}×)" if cs and cf else ""))
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
        for suffix, what in (("", "one file"), ("-2files", "index-sharded, two files")):
            p = S(size, "peer-dp8-fg8-hf" + suffix)
            f = S(size, "dp8-fg8-hf" + suffix)
            fl = S(size, "floor-dp8-fg8-hf" + suffix)
            if suffix and (size, "dp8-fg8-hf" + suffix) in rows:
                fl = row(size, "floor-dp8-fg8-hf" + suffix, f"floor for all-DP 8, every fine-grained 8, from the {what} checkpoint")
                cs, cf = cpu_seconds(a.res, rows[(size, "dp8-fg8-hf" + suffix)]), cpu_seconds(a.res, rows.get((size, "floor-dp8-fg8-hf" + suffix), []))
                f = row(size, "dp8-fg8-hf" + suffix, f"fineshard shard all-DP 8, every fine-grained 8, from the {what} checkpoint", fl,
                        f"CPU (user + sys) {cs:.2f} s, floor's {cf:.2f} s ({cs / cf:.2f}×)" if cs and cf else "")
            if f and fl:
                checks.append((f"{size} shard all-DP 8 / fine-grained 8 ({what}) ≤ 1.1× floor (issue 17)",
                               f["median"] <= 1.1 * fl["median"], f"{f['median'] / fl['median']:.2f}×"))
            if p is None:
                continue
            note = ""
            if f:
                note = (f"peer/fineshard time {p['median'] / f['median']:.2f}×, "
                        f"fineshard/peer RSS {f['rss'] / p['rss']:.2f}")
                checks.append((f"{size} shard ({what}) never slower than the peer (issue 17)", f["median"] <= p["median"],
                               f"fineshard/peer {f['median'] / p['median']:.2f}×"))
                checks.append((f"{size} shard RSS ≤ 1/4 of peer's ({what})", f["rss"] * 4 <= p["rss"],
                               f"{f['rss'] / p['rss']:.2f}"))
            row(size, "peer-dp8-fg8-hf" + suffix,
                f"Python peer (safe_open + get_slice + numpy), all-DP 8 fine-grained 8, {what}", fl, note)
        for case, base, label, limit in (
                ("verify", "floor-verify", "verify OUT (all-DP 8 output)", 1.15),
                ("verify-source", "floor-verify-source", "verify OUT --source CKPT", 1.3)):
            if (size, case) not in rows:
                continue
            b = row(size, base, "floor: openssl sha256 of the output, two processes"
                    + (" + cat of the source" if case == "verify-source" else ""))
            cv, cb = cpu_seconds(a.res, rows[(size, case)]), cpu_seconds(a.res, rows.get((size, base), []))
            v = row(size, case, label, b, f"CPU (user + sys) {cv:.2f} s, floor's {cb:.2f} s" if cv and cb else "")
            if v and b:
                checks.append((f"{size} {case} ≤ {limit}× its floor (issue 17)", v["median"] <= limit * b["median"],
                               f"{v['median'] / b['median']:.2f}×"))
            if v:
                checks.append((f"{size} {case} peak RSS ≤ 512 MiB", v["rss"] <= budget, fmt_rss(v["rss"])))
        if size == "1B":
            f = S(size, "forward-check")
            if f:
                row(size, "forward-check", "forward-check, all-DP 8 output, 8 tokens per rank")
                checks.append((f"{size} forward-check ≤ 30 s", f["median"] <= 30, f"{f['median']:.1f} s"))
                b = S(size, "forward-check-baseline")
                if b:
                    rev = m.get("baseline", "?")
                    row(size, "forward-check-baseline", f"forward-check by the baseline build ({rev}), same output, alternated",
                        None, f"baseline/now {b['median'] / f['median']:.2f}×")
                    checks.append((f"{size} forward-check ≥ 2× faster than {rev} (issue 17)", b["median"] >= 2 * f["median"],
                                   f"{b['median'] / f['median']:.2f}×"))
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
    if ("R1", "plan") in rows:
        pl = S("R1", "plan")
        cpu = cpu_seconds(a.res, rows[("R1", "plan")])
        row("R1", "plan", "plan, header-only DeepSeek-R1 W8A8 (136,679 tensors), DP 32 + EP, fine-grained 8; text to /dev/null",
            None, f"CPU (user + sys) {cpu:.2f} s" if cpu else "")
        if pl:
            checks.append(("plan DeepSeek-R1 under a second, wall (issue 17)", pl["median"] < 1, f"{pl['median']:.2f} s (CPU {cpu or 0:.2f} s)"))
    if ("R1", "shard-rank0") in rows:
        fl = row("R1", "floor-shard-rank0", "floor for DeepSeek-R1 rank 0's bytes and files: cp + openssl sha256")
        cs, cf = cpu_seconds(a.res, rows[("R1", "shard-rank0")]), cpu_seconds(a.res, rows.get(("R1", "floor-shard-rank0"), []))
        r1 = row("R1", "shard-rank0", "fineshard shard DeepSeek-R1 --ranks 0 (DP 32 + EP, fine-grained 8; sparse input)", fl,
                 f"CPU (user + sys) {cs:.2f} s, floor's {cf:.2f} s ({cs / cf:.2f}×)" if cs and cf else "")
        if r1 and fl:
            checks.append(("R1 rank 0 shard ≤ 1.2× floor (issue 17)", r1["median"] <= 1.2 * fl["median"],
                           f"{r1['median'] / fl['median']:.2f}×"))
        if r1:
            checks.append(("R1 rank 0 shard peak RSS ≤ 256 MiB (issue 17)", r1["rss"] <= 256 * MIB, fmt_rss(r1["rss"])))
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
        # Hand-written sections after the generated part (earlier runs, notes) are kept.
        kept = ""
        if os.path.exists(a.doc):
            old = open(a.doc).read()
            if KEEP in old:
                kept = old[old.index(KEEP) + len(KEEP):]
            else:
                m2 = re.search(r"\n## (?!Machine|What is measured|Results|Targets)", old)
                kept = "\n" + old[m2.start() + 1:] if m2 else ""
        with open(a.doc, "w") as f:
            f.write(DOC.format(machine=mach, table=table, checks=ck) + "\n" + KEEP + kept)
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
- **verify**: on the all-DP 8 output, against its floor: `openssl dgst -sha256` over the output files, two
  processes at once (half the files each: this CPU's fastest SHA-256 on both cores); `verify --source`
  against that plus `cat` of the source.
- **Two-file checkpoint**: the 1B checkpoint split at 1.2 GB with `model.safetensors.index.json`
  (`make_llama.py --max-shard-size 1.2e9`); fineshard, its floor and the peer run interleaved.
- **plan**: `fineshard plan` on the header-only DeepSeek-R1 W8A8 checkpoint
  (`scripts/make_deepseek_r1_headers.py`), DP 32 + EP, every fine-grained size 8, text to /dev/null, warm.
- **DeepSeek-R1 rank 0** (`--with-r1`): `shard --ranks 0` of that checkpoint (its data are holes, read as
  zeros without the disk); the floor copies and hashes the same bytes in the same number of files from a
  warm file of real bytes.
- **forward-check** (`--baseline REV`): the same command by REV's release build (built once into
  `$FINESHARD_BENCH_DIR/baseline-REV`) on the same output, alternated run by run with this build.
- **Peak RSS**: GNU time's "Maximum resident set size".

## Results

{table}

## Targets (issue 8; issue 4's peak-RSS point; issue 5's verify point; issue 17)

| target | met | value |
|---|---|---|
{checks}
"""

KEEP = "<!-- Sections below are kept when scripts/bench.sh regenerates this file. -->\n"

if __name__ == "__main__":
    main()
