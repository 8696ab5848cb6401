#!/usr/bin/env python3
"""Plain RTP calls through rtpengine's ng protocol (offer from A, answer from B), for
perf-lab/xdp: rtpengine relays in userspace with no crypto, as the edge relays.

  ng_plain_call.py NG_ADDR A_IP:A_PORT B_IP:B_PORT [CALLS]

Prints, one per line, the port A must send to for each call (rtpengine forwards A's
packets to B from its other port). Many calls spread the load over many sockets, as real
traffic does: rtpengine reads at most 50 packets per socket wake-up and, after 5 such
overruns, discards what it reads from that socket.
Only the standard library: bencode is small enough to write here.
"""
import os
import socket
import sys


def bencode(v):
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, val) for k, val in v.items())
        return b"d" + b"".join(bencode(k) + bencode(val) for k, val in items) + b"e"
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    return b"%d:%s" % (len(v), v)


def bdecode(b, i=0):
    c = b[i:i + 1]
    if c == b"d":
        out, i = {}, i + 1
        while b[i:i + 1] != b"e":
            k, i = bdecode(b, i)
            out[k.decode()], i = bdecode(b, i)
        return out, i + 1
    if c == b"l":
        out, i = [], i + 1
        while b[i:i + 1] != b"e":
            x, i = bdecode(b, i)
            out.append(x)
        return out, i + 1
    if c == b"i":
        end = b.index(b"e", i)
        return int(b[i + 1:end]), end + 1
    colon = b.index(b":", i)
    n = int(b[i:colon])
    return b[colon + 1:colon + 1 + n], colon + 1 + n


def request(sock, addr, msg):
    cookie = os.urandom(6).hex().encode()
    sock.sendto(cookie + b" " + bencode(msg), addr)
    data, _ = sock.recvfrom(65536)
    got_cookie, _, body = data.partition(b" ")
    if got_cookie != cookie:
        sys.exit("ng: reply for another request")
    reply, _ = bdecode(body)
    if reply.get("result") != b"ok":
        sys.exit("ng: %r" % reply)
    return reply


def sdp(ip, port, session):
    return ("v=0\r\no=- %d 1 IN IP4 %s\r\ns=perf\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
            % (session, ip, ip, port))


def media_port(sdp_bytes):
    for line in sdp_bytes.decode().split("\r\n"):
        if line.startswith("m=audio "):
            return int(line.split()[1])
    sys.exit("ng: no audio line in %r" % sdp_bytes)


def main():
    ng_host, ng_port = sys.argv[1].rsplit(":", 1)
    (a_ip, a_port), (b_ip, b_port) = (x.rsplit(":", 1) for x in sys.argv[2:4])
    ng = (ng_host, int(ng_port))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    for i in range(calls):
        call = {"call-id": "perf-xdp-%d" % i, "from-tag": "a"}
        request(s, ng, dict(call, command="offer", sdp=sdp(a_ip, int(a_port), 2 * i + 1)))
        answer = request(s, ng, dict(call, command="answer", **{"to-tag": "b"},
                                     sdp=sdp(b_ip, int(b_port), 2 * i + 2)))
        print(media_port(answer["sdp"]))


if __name__ == "__main__":
    main()
