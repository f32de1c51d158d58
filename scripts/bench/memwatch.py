#!/usr/bin/env python3
"""Run a command and kill it when its anonymous resident memory passes a limit.

Stands in for a memory cgroup where none can be made: a cgroup reclaims page cache and clean file
mappings under pressure, but not anonymous memory, so RssAnon is what would hit the limit.
Polls /proc/PID/status every --interval seconds; prints one summary line (peaks, killed or not) to
stderr; exits with the command's status, or 137 when killed.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit-mib", type=int, default=1024)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    limit = a.limit_mib << 20
    p = subprocess.Popen(cmd)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    killed_at = None
    while p.poll() is None:
        s = status(p.pid)
        for k in peak:
            peak[k] = max(peak[k], s.get(k, 0))
        if s.get("RssAnon", 0) > limit:
            killed_at = s
            p.send_signal(signal.SIGKILL)
            p.wait()
            break
        time.sleep(a.interval)
    rc = 137 if killed_at else p.returncode
    print("memwatch " + json.dumps({"limit_bytes": limit, "killed": bool(killed_at), "killed_at": killed_at,
                                    "peak_bytes": peak, "rc": rc}), file=sys.stderr)
    sys.exit(rc)


if __name__ == "__main__":
    main()
