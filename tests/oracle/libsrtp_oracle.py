#!/usr/bin/env python3
"""An independent SRTP oracle: libsrtp2 (through pylibsrtp) driven over JSON lines.

The Rust tests start this process and write one request per line on stdin; each gets one
reply line on stdout.

  {"op":"new","id":N,"profile":"<SDES suite>","key":"<hex key||salt>",
   "window":W,"allow_repeat_tx":false}
  {"op":"protect"|"unprotect"|"protect_rtcp"|"unprotect_rtcp","id":N,"packet":"<hex>"}
  -> {"ok":true,"packet":"<hex>"}  or  {"ok":false,"error":"<libsrtp's words>"}

A session accepts any SSRC in either direction (libsrtp needs the direction: a session is
made lazily as outbound on the first protect, inbound on the first unprotect).

pylibsrtp only names four profiles. The two AES_256_CM_HMAC_SHA1 suites (RFC 6188) are
built by starting from the AES_CM_128 policy and rewriting the six fields of libsrtp's
srtp_crypto_policy_t (cipher type, key length, auth type, auth key length, tag length,
services), whose layout is checked against the 128-bit profile before it is trusted.
`--self-test` checks that libsrtp reproduces its own published AES-256 known answer.
"""
import json
import sys

import pylibsrtp
from pylibsrtp._binding import ffi, lib

P = pylibsrtp.Policy
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (P.SRTP_PROFILE_AES128_CM_SHA1_80, None),
    "AES_CM_128_HMAC_SHA1_32": (P.SRTP_PROFILE_AES128_CM_SHA1_32, None),
    "AEAD_AES_128_GCM": (P.SRTP_PROFILE_AEAD_AES_128_GCM, None),
    "AEAD_AES_256_GCM": (P.SRTP_PROFILE_AEAD_AES_256_GCM, None),
    # (base profile, (rtp tag, rtcp tag)) for the rewritten AES-256 policies
    "AES_256_CM_HMAC_SHA1_80": (P.SRTP_PROFILE_AES128_CM_SHA1_80, (10, 10)),
    "AES_256_CM_HMAC_SHA1_32": (P.SRTP_PROFILE_AES128_CM_SHA1_80, (4, 10)),
}
SRTP_AES_ICM_128, SRTP_AES_ICM_256, SRTP_HMAC_SHA1 = 1, 5, 3
SEC_SERV_CONF_AND_AUTH = 3


def _fields(crypto_policy):
    return ffi.cast("uint32_t *", ffi.addressof(crypto_policy))


def _make_aes256(policy, tags):
    for part, tag in ((policy._policy.rtp, tags[0]), (policy._policy.rtcp, tags[1])):
        f = _fields(part)
        seen = [f[i] for i in range(6)]
        if seen != [SRTP_AES_ICM_128, 30, SRTP_HMAC_SHA1, 20, 10, SEC_SERV_CONF_AND_AUTH]:
            raise RuntimeError(f"unexpected srtp_crypto_policy_t layout {seen}")
        f[0], f[1], f[4] = SRTP_AES_ICM_256, 46, tag


def policy(profile, key, ssrc_type, window, allow_repeat_tx):
    base, tags = PROFILES[profile]
    p = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=base)
    if tags:
        _make_aes256(p, tags)
    p.window_size = window
    p.allow_repeat_tx = allow_repeat_tx
    return p


class Stream:
    def __init__(self, req):
        self.req = req
        self.tx = None
        self.rx = None

    def session(self, outbound):
        r = self.req
        key = bytes.fromhex(r["key"])
        if outbound:
            if self.tx is None:
                self.tx = pylibsrtp.Session(policy(r["profile"], key, P.SSRC_ANY_OUTBOUND, r.get("window", 1024), r.get("allow_repeat_tx", False)))
            return self.tx
        if self.rx is None:
            self.rx = pylibsrtp.Session(policy(r["profile"], key, P.SSRC_ANY_INBOUND, r.get("window", 1024), r.get("allow_repeat_tx", False)))
        return self.rx


def handle(streams, req):
    op = req["op"]
    if op == "new":
        if req["profile"] not in PROFILES:
            return {"ok": False, "error": f"unknown profile {req['profile']}"}
        streams[req["id"]] = Stream(req)
        return {"ok": True}
    s = streams[req["id"]]
    packet = bytes.fromhex(req["packet"])
    sess = s.session(op.startswith("protect"))
    fn = {"protect": sess.protect, "unprotect": sess.unprotect,
          "protect_rtcp": sess.protect_rtcp, "unprotect_rtcp": sess.unprotect_rtcp}[op]
    try:
        return {"ok": True, "packet": fn(packet).hex()}
    except pylibsrtp.Error as e:
        return {"ok": False, "error": str(e)}


def self_test():
    # libsrtp's own AES-256 known answer (srtp_validate_aes_256, RFC 6188 7.2 master key).
    key = bytes.fromhex("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"
                        "3b04803de51ee7c96423ab5b78d2")
    plain = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
    want = bytes.fromhex("800f1234decafbadcafebabe" "f1d9de17ff251ff1aa007774b0b4b40d"
                         "a08d9d9a5b3a55d8873b")
    s = Stream({"profile": "AES_256_CM_HMAC_SHA1_80", "key": key.hex()})
    got = s.session(True).protect(plain)
    assert got == want, f"AES-256 KAT mismatch: {got.hex()}"
    for name in PROFILES:
        kl = 46 if "256" in name else 30
        if name.startswith("AEAD"):
            kl = 44 if "256" in name else 28
        st = Stream({"profile": name, "key": bytes(range(kl)).hex()})
        rx = Stream({"profile": name, "key": bytes(range(kl)).hex()})
        for seq in range(3):
            pkt = bytes([0x80, 0, 0, seq, 0, 0, 0, 0, 1, 2, 3, 4]) + b"payload"
            assert rx.session(False).unprotect(st.session(True).protect(pkt)) == pkt, name
    print("libsrtp oracle self-test ok:", ", ".join(PROFILES))


def main():
    if "--self-test" in sys.argv:
        self_test()
        return
    streams = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = handle(streams, json.loads(line))
        except Exception as e:  # a bad request is answered, never fatal
            reply = {"ok": False, "error": f"oracle: {type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
