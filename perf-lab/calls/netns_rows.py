#!/usr/bin/env python3
"""perf-lab/calls/run (netns mode): two markdown rows for one media step.

  netns_rows.py RESULT_JSON HOST_JSON GEN_CPU SUT_CPU

RESULT_JSON is the generator's RESULT line, HOST_JSON what `sampler_stop` printed (the
window's per-CPU time and XDP program time from hostsample.py, the 1 Hz counters cut to the
window, and the counters before and after the whole step). Row 1: CPU per role and per
core over the measured window. Row 2: where the media went (XDP, the edge's workers, the
core's workers, each host's UDP sockets), so a reader can check that every packet crossed
the edge in the kernel and was re-keyed by the core.
"""
import json
import sys


def get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def delta(before, after, *path):
    a, b = get(before, *path), get(after, *path)
    if a is None or b is None:
        return None
    return b - a


def fmt(v, spec="d"):
    if v is None:
        return "-"
    if spec == "d":
        return f"{round(v):d}"
    return format(v, spec)


def main():
    r = json.loads(sys.argv[1])
    host = json.loads(sys.argv[2] or "{}")
    gen_cpu, sut_cpu = f"cpu{sys.argv[3]}", f"cpu{sys.argv[4]}"
    m = r.get("media") or {}
    cpu = {c["role"]: c.get("media_cpu_pct") for c in r.get("cpu", [])}
    progs = list((host.get("bpf") or {}).values())
    xdp_ns = sum(p["run_time_ns"] for p in progs) if progs else None
    xdp_runs = sum(p["run_cnt"] for p in progs) if progs else None
    xdp_pct = sum(p["pct_of_a_core"] for p in progs) if progs else None
    ns_per_pkt = xdp_ns / xdp_runs if xdp_runs else None

    def pct(role):
        return cpu.get(role) or 0.0

    edge = pct("edge-control") + pct("edge-dataplane") + (xdp_pct or 0.0)
    core = pct("core-control") + pct("core-dataplane")

    def core_split(name):
        c = get(host, "cpus", name)
        if not c:
            return "-"
        return (
            f"{c['busy']:.0f} (usr {c['user']:.0f}, sys {c['system']:.0f}, "
            f"softirq {c['softirq']:.0f})"
        )

    gap = host.get("largest_gap_s")
    if host.get("window_error"):
        ns_note = f" (no window: {host['window_error']})"
    elif gap is not None and gap > 1.0:
        ns_note = f" (sampler gap {gap:.1f} s)"
    else:
        ns_note = ""
    if host.get("sampler_cpu_s") is not None and host.get("seconds"):
        # The sampler's CPU over the whole step, as an upper bound on its share of GEN_CPU.
        ns_note += f"; sampler {host['sampler_cpu_s']:.1f} CPU s"
    print(
        f"| {r['attempted']} | {edge:.1f} (ctl {pct('edge-control'):.1f} + dp "
        f"{pct('edge-dataplane'):.1f} + XDP {fmt(xdp_pct, '.1f')}) | {core:.1f} (ctl "
        f"{pct('core-control'):.1f} + dp {pct('core-dataplane'):.1f}) | "
        f"{pct('generator'):.1f} | {pct('ucm-sim'):.1f} | {fmt(ns_per_pkt, '.0f')}{ns_note} | "
        f"{core_split(sut_cpu)} | {core_split(gen_cpu)} |"
    )

    # Where the media went, whole step (warm-up, measured window, drain, signalling).
    b, a = host.get("step_before"), host.get("step_after")
    relayed = delta(b, a, "xdp", "relayed_packets")
    xdp_rx = delta(b, a, "xdp", "rx_packets")
    passed = delta(b, a, "xdp", "passed_packets")
    steered = delta(b, a, "xdp", "steered_packets")
    drops = delta(b, a, "xdp", "drops_total")
    keepalives = delta(b, a, "xdp", "keepalives_rx")
    reasons = ", ".join(
        f"{k} {v}"
        for k in sorted(get(a, "xdp", "drops", default={}) or {})
        if (v := delta(b, a, "xdp", "drops", k))
    )
    if reasons:
        reasons = f" ({reasons})"
    udp_in = ", ".join(
        f"{h} {fmt(delta(b, a, 'udp', h, 'InDatagrams'))}"
        for h in ("client", "edge", "core", "inside")
    )
    edge_rx = delta(b, a, "edge", "total", "rx_packets")
    core_rx = delta(b, a, "core", "total", "rx_packets")
    core_tx = delta(b, a, "core", "total", "tx_packets")
    core_drops = delta(b, a, "core", "total", "drops_total")
    rcvbuf = ", ".join(
        f"{h} {fmt(delta(b, a, 'udp', h, 'RcvbufErrors'))}"
        for h in ("client", "edge", "core", "inside")
    )
    # The measured window: the generator's sends against the program's runs and the
    # counters' 1 Hz samples inside the window (their own span).
    win = host.get("counters") or {}
    span = win.get("span_s")
    d = win.get("delta") or {}
    rate = (lambda k: d.get(k, 0) / span if span else None)
    print(
        f"| {r['attempted']} | {m.get('sent', '-')} | {fmt(xdp_runs)} | "
        f"{fmt(rate('xdp.relayed_packets'))} / {fmt(rate('core.total.rx_packets'))} / "
        f"{fmt(rate('edge.total.rx_packets'))} | {fmt(xdp_rx)} | {fmt(relayed)} | "
        f"{fmt(passed)} | {fmt(steered)} | {fmt(keepalives)} | {fmt(drops)}{reasons} | {fmt(edge_rx)} | "
        f"{fmt(core_rx)} | {fmt(core_tx)} | {fmt(core_drops)} | {udp_in} | {rcvbuf} |"
    )


if __name__ == "__main__":
    main()
