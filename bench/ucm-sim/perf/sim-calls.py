#!/usr/bin/env python3
"""How many simulated-phone SRTP calls one ucm-sim carries: N sim-to-sim calls (2N phones,
each sending 50 packets/s of 172-byte G.711 RTP under AES_CM_128_HMAC_SHA1_80 and checking
what it receives), held for SECONDS, then the phones' counters and ucm-sim's CPU.

usage: sim-calls.py UCM_SIM_BINARY CALLS SECONDS [CPU]   (CPU: taskset core for ucm-sim)
Prints one JSON line: calls, seconds, tx, rx, lost, decrypt_failures, loss, cpu_percent.
"""
import json, os, socket, subprocess, sys, tempfile, time

binary, calls, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
cpu = sys.argv[4] if len(sys.argv) > 4 else None
tmp = tempfile.mkdtemp(prefix="ucm-sim-perf-")
users = os.path.join(tmp, "users.toml")
with open(users, "w") as f:
    for i in range(2 * calls):
        f.write(f'[[user]]\nname = "p{i}"\npassword = "x"\nnumber = "{10000 + i}"\n'
                f'security_profile = "secure"\nphone = "sim"\n')
ready = os.path.join(tmp, "ready.json")
cmd = [binary, "--sip-tcp", "127.0.0.1:0", "--users", users, "--ready-file", ready]
if cpu is not None:
    cmd = ["taskset", "-c", cpu] + cmd
proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
try:
    for _ in range(500):
        if os.path.exists(ready):
            break
        time.sleep(0.01)
    admin = json.load(open(ready))["admin"].rsplit(":", 1)
    conn = socket.create_connection((admin[0], int(admin[1])))
    rfile = conn.makefile("r")

    def ask(obj):
        conn.sendall((json.dumps(obj) + "\n").encode())
        return json.loads(rfile.readline())

    for i in range(calls):
        r = ask({"cmd": "call", "from": f"p{2 * i}", "to": f"p{2 * i + 1}"})
        assert r["ok"], r
    time.sleep(1.0)  # let every stream start

    def snapshot():
        tot = dict(tx=0, rx=0, lost=0, decrypt_failures=0)
        for c in ask({"cmd": "calls"})["calls"]:
            for leg in c["legs"]:
                for k in tot:
                    tot[k] += leg.get("media", {}).get(k, 0)
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return tot, ticks, time.monotonic()

    a, ta, wa = snapshot()
    time.sleep(seconds)
    b, tb, wb = snapshot()
    d = {k: b[k] - a[k] for k in a}
    hz = os.sysconf("SC_CLK_TCK")
    d.update(calls=calls, seconds=round(wb - wa, 2),
             loss=round((d["tx"] - d["rx"]) / d["tx"], 5) if d["tx"] else None,
             cpu_percent=round(100.0 * (tb - ta) / hz / (wb - wa), 1))
    print(json.dumps(d))
finally:
    proc.terminate()
    proc.wait()
