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
`--self-test` checks libsrtp's own published known answers (AES-128 and AES-256), round-trips
RTP and RTCP for every profile, and checks the rewritten AES-256 policies against the
system libsrtp2's own policy setters (Debian's libsrtp2-dev, through ctypes) when present.
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


def _key_len(name):
    if name.startswith("AEAD"):
        return 44 if "256" in name else 28
    return 46 if "256" in name else 30


def _tag_lens(name):
    """(RTP, RTCP) bytes protect adds: auth tag, and for RTCP the E flag + SRTCP index."""
    if name.startswith("AEAD"):
        return 16, 4 + 16
    return (4 if name.endswith("_32") else 10), 4 + 10


_SYSTEM_LIBSRTP = None


def _system_libsrtp_protect(name, key, rtp, rtcp):
    """Protects with the system's libsrtp2 (Debian's, through ctypes) using libsrtp's own
    AES-256 policy setters; None when that library is not installed."""
    import ctypes
    import ctypes.util

    global _SYSTEM_LIBSRTP
    if _SYSTEM_LIBSRTP is None:
        path = ctypes.util.find_library("srtp2")
        if path is None:
            return None
        _SYSTEM_LIBSRTP = ctypes.CDLL(path)
        assert _SYSTEM_LIBSRTP.srtp_init() == 0  # once: a second srtp_init fails
    so = _SYSTEM_LIBSRTP
    pol = ctypes.create_string_buffer(256)  # srtp_policy_t (128 bytes in libsrtp 2.x), zeroed
    base = ctypes.addressof(pol)
    setter = {"AES_256_CM_HMAC_SHA1_80": "srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80",
              "AES_256_CM_HMAC_SHA1_32": "srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32"}[name]
    getattr(so, setter)(ctypes.c_void_p(base + 8))  # .rtp
    so.srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(ctypes.c_void_p(base + 32))  # .rtcp
    keybuf = ctypes.create_string_buffer(key)
    ctypes.c_int.from_address(base).value = 3  # .ssrc.type = ssrc_any_outbound
    ctypes.c_void_p.from_address(base + 56).value = ctypes.addressof(keybuf)  # .key
    ctypes.c_ulong.from_address(base + 88).value = 1024  # .window_size
    sess = ctypes.c_void_p()
    assert so.srtp_create(ctypes.byref(sess), ctypes.c_void_p(base)) == 0
    out = []
    for pkt, fn in ((rtp, so.srtp_protect), (rtcp, so.srtp_protect_rtcp)):
        buf = ctypes.create_string_buffer(pkt, len(pkt) + 64)
        n = ctypes.c_int(len(pkt))
        assert fn(sess, buf, ctypes.byref(n)) == 0, f"system libsrtp2 {name} protect failed"
        out.append(buf.raw[: n.value])
    so.srtp_dealloc(sess)
    return out


def self_test():
    def protect(name, key, pkt, rtcp=False):
        tx = Stream({"profile": name, "key": key.hex()}).session(True)
        return tx.protect_rtcp(pkt) if rtcp else tx.protect(pkt)

    # libsrtp's own known answers (test/srtp_driver.c: srtp_validate, srtp_validate_aes_256).
    hdr_ab = bytes.fromhex("800f1234decafbadcafebabe") + b"\xab" * 16
    kat = [
        ("AES_CM_128_HMAC_SHA1_80",
         "e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6",
         "4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"),
        ("AES_256_CM_HMAC_SHA1_80",
         "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"
         "3b04803de51ee7c96423ab5b78d2",
         "f1d9de17ff251ff1aa007774b0b4b40da08d9d9a5b3a55d8873b"),
    ]
    for name, key, body in kat:
        got = protect(name, bytes.fromhex(key), hdr_ab)
        assert got == hdr_ab[:12] + bytes.fromhex(body), f"{name} known answer: {got.hex()}"

    # Every profile: RTP and RTCP round trips with the expected trailer lengths.
    rtcp_sr = bytes.fromhex("80c80006cafebabe") + bytes(range(20))
    for name in PROFILES:
        key = bytes(range(_key_len(name)))
        tx = Stream({"profile": name, "key": key.hex()})
        rx = Stream({"profile": name, "key": key.hex()})
        rtp_tag, rtcp_tag = _tag_lens(name)
        for seq in range(3):
            pkt = bytes([0x80, 0, 0, seq, 0, 0, 0, 0, 1, 2, 3, 4]) + b"payload"
            prot = tx.session(True).protect(pkt)
            assert len(prot) == len(pkt) + rtp_tag, f"{name} RTP length {len(prot)}"
            assert rx.session(False).unprotect(prot) == pkt, name
            prot = tx.session(True).protect_rtcp(rtcp_sr)
            assert len(prot) == len(rtcp_sr) + rtcp_tag, f"{name} RTCP length {len(prot)}"
            assert rx.session(False).unprotect_rtcp(prot) == rtcp_sr, name

    # The rewritten AES-256 policies agree with libsrtp's own policy setters.
    checked = []
    for name in ("AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"):
        key = bytes(range(100, 146))
        rtp = bytes.fromhex("80000001000000a012345678") + b"\x5a" * 40
        want = _system_libsrtp_protect(name, key, rtp, rtcp_sr)
        if want is None:
            break
        got = [protect(name, key, rtp), protect(name, key, rtcp_sr, rtcp=True)]
        assert got == want, f"{name} differs from the system libsrtp2: {got} != {want}"
        checked.append(name)
    note = ("; AES-256 policies match the system libsrtp2" if checked
            else "; system libsrtp2 not found, AES-256 policy cross-check skipped")
    print("libsrtp oracle self-test ok:", ", ".join(PROFILES) + note)


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
