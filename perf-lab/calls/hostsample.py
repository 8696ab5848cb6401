#!/usr/bin/env python3
"""Host-side samples for perf-lab/calls/run (netns mode), cut to the generator's media window.

  hostsample.py sample OUT PID [--snmp HOST=PID ...] [--counters CMD]
      Every 0.2 s until killed, append one JSON line to OUT: the Unix time, every CPU's
      /proc/stat jiffies, and run_time_ns / run_cnt of each BPF program whose fd process PID
      holds (the edge data plane's XDP program; non-zero with kernel.bpf_stats_enabled=1).
      Every fifth sample (1 Hz) also stores the Udp counters of each HOST (read from
      /proc/PID/net/snmp: the namespace of a process on that host) and the JSON object CMD
      (a shell command: XDP and worker counters) prints, so counters can be cut to the window
      too.
  hostsample.py once [--snmp HOST=PID ...] [--counters CMD]
      Print those counters once (before and after a step).
  hostsample.py window OUT T0_MS T1_MS
      Print one JSON object: each CPU's time split (user, system, softirq, irq, idle, busy) in
      percent of the window, the BPF programs' run time and runs in the window with ns per run
      and percent of one core, and the counter deltas between the 1 Hz samples nearest the
      window's ends (with the exact span they cover). Values between samples are linearly
      interpolated (the jiffies and BPF counters move smoothly under a steady load).
"""
import json
import os
import subprocess
import sys
import time

CPU_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def cpu_jiffies():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                out[parts[0]] = [int(x) for x in parts[1 : 1 + len(CPU_FIELDS)]]
    return out


def prog_fdinfo(path):
    """(prog_id, run_time_ns, run_cnt) from one fdinfo file, None if not a BPF program."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if "run_time_ns:" not in text:
        return None  # not a program fd (maps and links have no run_time_ns)
    kv = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return kv["prog_id"].strip(), int(kv["run_time_ns"]), int(kv["run_cnt"])


class BpfProgs:
    """run_time_ns / run_cnt per BPF program id held by `pid` (each id once). The process's
    fds are scanned once (an edge data plane holds thousands of sockets: rescanning them at
    5 Hz cost the generator's core ~10 %), then only the program fds found are read, with a
    rescan when one of them goes away."""

    def __init__(self, pid):
        self.base = f"/proc/{pid}/fdinfo"
        self.fds = None

    def scan(self):
        self.fds = {}
        try:
            fds = os.listdir(self.base)
        except OSError:
            return
        for fd in fds:
            info = prog_fdinfo(f"{self.base}/{fd}")
            if info and info[0] not in self.fds.values():
                self.fds[fd] = info[0]

    def read(self):
        for _ in range(2):
            if self.fds is None:
                self.scan()
            progs = {}
            for fd, prog_id in self.fds.items():
                info = prog_fdinfo(f"{self.base}/{fd}")
                if info is None or info[0] != prog_id:
                    self.fds = None  # closed or reused: find the programs again
                    break
                progs[prog_id] = [info[1], info[2]]
            else:
                return progs
        return {}


def udp_counters(pid):
    """The Udp: line pair of /proc/PID/net/snmp as a dict (the namespace PID lives in)."""
    with open(f"/proc/{pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def counters(snmp, counters_cmd):
    rec = {"udp": {}}
    for host, pid in snmp:
        try:
            rec["udp"][host] = udp_counters(pid)
        except (OSError, IndexError, ValueError):
            pass
    if counters_cmd:
        r = subprocess.run(counters_cmd, shell=True, capture_output=True, text=True, timeout=5)
        rec.update(json.loads(r.stdout))
    return rec


def sample(out, pid, snmp, counters_cmd):
    n = 0
    progs = BpfProgs(pid)
    with open(out, "a", buffering=1) as f:
        while True:
            rec = {"t": time.time(), "cpu": cpu_jiffies(), "bpf": progs.read()}
            if n % 5 == 0:
                try:
                    rec["counters"] = counters(snmp, counters_cmd)
                except (subprocess.SubprocessError, ValueError) as e:
                    rec["counters_error"] = str(e)
            f.write(json.dumps(rec) + "\n")
            n += 1
            time.sleep(0.2)


def interpolate(samples, t, get):
    """get(sample) -> list of numbers; the value at time t, linear between samples (the
    nearest two on one side when t lies outside them)."""
    if len(samples) < 2:
        raise SystemExit(f"{len(samples)} sample(s): nothing to interpolate")
    before = [s for s in samples if s["t"] <= t]
    after = [s for s in samples if s["t"] >= t]
    if not before:
        a, b = samples[0], samples[1]
    elif not after:
        a, b = samples[-2], samples[-1]
    else:
        a, b = before[-1], after[0]
    va, vb = get(a), get(b)
    if b["t"] == a["t"]:
        return va
    w = (t - a["t"]) / (b["t"] - a["t"])
    return [x + (y - x) * w for x, y in zip(va, vb)]


def flatten(obj, prefix=""):
    """Numeric leaves of a JSON object as {"a.b.c": value}."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = obj
    return out


def window(out, t0_ms, t1_ms):
    with open(out) as f:
        samples = [json.loads(line) for line in f if line.strip()]
    t0, t1 = t0_ms / 1000.0, t1_ms / 1000.0
    secs = t1 - t0
    hz = os.sysconf("SC_CLK_TCK")
    ts = [s["t"] for s in samples if t0 - 1 <= s["t"] <= t1 + 1]
    # The largest stretch of the window without a sample (a starved sampler): how far the
    # numbers lean on interpolation.
    edges = [t0] + [t for t in ts if t0 < t < t1] + [t1]
    result = {
        "seconds": secs,
        "samples": len(ts),
        "largest_gap_s": max((b - a for a, b in zip(edges, edges[1:])), default=secs),
        "cpus": {},
        "bpf": {},
    }
    for cpu in samples[-1]["cpu"]:
        a = interpolate(samples, t0, lambda s: s["cpu"][cpu])
        b = interpolate(samples, t1, lambda s: s["cpu"][cpu])
        d = {k: 100.0 * (y - x) / hz / secs for k, x, y in zip(CPU_FIELDS, a, b)}
        result["cpus"][cpu] = {
            "user": d["user"] + d["nice"],
            "system": d["system"],
            "softirq": d["softirq"],
            "irq": d["irq"],
            "idle": d["idle"] + d["iowait"],
            "busy": 100.0 - d["idle"] - d["iowait"],
        }
    for prog in samples[-1]["bpf"]:
        have = [s for s in samples if prog in s["bpf"]]
        a = interpolate(have, t0, lambda s: s["bpf"][prog])
        b = interpolate(have, t1, lambda s: s["bpf"][prog])
        ns, runs = b[0] - a[0], b[1] - a[1]
        result["bpf"][prog] = {
            "run_time_ns": round(ns),
            "run_cnt": round(runs),
            "ns_per_run": ns / runs if runs else None,
            "pct_of_a_core": 100.0 * ns / 1e9 / secs,
        }
    # Counters: the 1 Hz samples just inside the window (no interpolation of integers).
    counted = [s for s in samples if "counters" in s and t0 <= s["t"] <= t1]
    if len(counted) >= 2:
        first, last = counted[0], counted[-1]
        fa, fb = flatten(first["counters"]), flatten(last["counters"])
        result["counters"] = {
            "span_s": last["t"] - first["t"],
            "delta": {k: fb[k] - fa[k] for k in fb if k in fa and fb[k] != fa[k]},
        }
    print(json.dumps(result))


def parse_options(rest):
    """--snmp HOST=PID (repeatable) and --counters CMD."""
    snmp, cmd = [], ""
    while rest:
        if len(rest) < 2:
            raise SystemExit(f"{rest[0]}: needs a value")
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--snmp":
            host, pid = value.split("=", 1)
            snmp.append((host, int(pid)))
        elif flag == "--counters":
            cmd = value
        else:
            raise SystemExit(f"unknown option {flag}")
    return snmp, cmd


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], int(sys.argv[3]), *parse_options(sys.argv[4:]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "once":
        print(json.dumps(counters(*parse_options(sys.argv[2:]))))
    elif len(sys.argv) == 5 and sys.argv[1] == "window":
        window(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
