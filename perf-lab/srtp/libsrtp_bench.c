/*
 * libsrtp2 side of perf-lab/srtp: ns/packet of protect, unprotect and re-key for every
 * suite edgeway implements, at 172 bytes (G.711 20 ms) and 1200 bytes (video), measured
 * exactly as dataplane/srtp/examples/srtp_perf.rs measures edgeway:
 *   protect:   one packet buffer, sequence number advanced every packet, timed in a loop;
 *   unprotect: chunks of CHUNK packets protected untimed, then unprotected timed;
 *   rekey:     chunks protected untimed by A, then timed unprotect(A) + protect(B) in place.
 * Output: TSV lines "<impl>\t<suite>\t<op>\t<size>\t<ns>"; <impl> is IMPL_NAME (build flag).
 */
#include <srtp2/srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef IMPL_NAME
#define IMPL_NAME "libsrtp2-nss"
#endif
#define CHUNK 2048
#define ROOM 64

static const char *NAMES[] = {
    "AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_256_CM_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_32",
};

static void set_policy(int suite, srtp_crypto_policy_t *rtp, srtp_crypto_policy_t *rtcp) {
    switch (suite) {
    case 0: srtp_crypto_policy_set_aes_gcm_256_16_auth(rtp); srtp_crypto_policy_set_aes_gcm_256_16_auth(rtcp); break;
    case 1: srtp_crypto_policy_set_aes_gcm_128_16_auth(rtp); srtp_crypto_policy_set_aes_gcm_128_16_auth(rtcp); break;
    case 2: srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(rtp); srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(rtcp); break;
    case 3: srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(rtp); srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(rtcp); break;
    case 4: srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(rtp); srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(rtcp); break;
    case 5: srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(rtp); srtp_crypto_policy_set_rtp_default(rtcp); break;
    }
}

static srtp_t session(int suite, uint8_t seed, int outbound) {
    static uint8_t key[2][64];
    srtp_policy_t p;
    memset(&p, 0, sizeof p);
    set_policy(suite, &p.rtp, &p.rtcp);
    for (int i = 0; i < 64; i++) key[outbound][i] = (uint8_t)(seed ^ i);
    p.key = key[outbound];
    p.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    p.window_size = 1024;
    p.allow_repeat_tx = 0;
    srtp_t s;
    if (srtp_create(&s, &p) != srtp_err_status_ok) return NULL;
    return s;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void header(uint8_t *p, uint16_t seq) {
    p[0] = 0x80; p[1] = 0; p[2] = seq >> 8; p[3] = seq & 0xff;
    p[8] = 0x12; p[9] = 0x34; p[10] = 0x56; p[11] = 0x78;
}

static uint8_t (*batch)[1200 + ROOM];
static int blen[CHUNK];

/* Protect CHUNK consecutive packets with tx into `batch`. */
static int prepare(srtp_t tx, uint16_t *seq, int size) {
    for (int i = 0; i < CHUNK; i++) {
        memset(batch[i], 0xab, size);
        header(batch[i], (*seq)++);
        blen[i] = size;
        if (srtp_protect(tx, batch[i], &blen[i]) != srtp_err_status_ok) return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    srtp_init();
    batch = malloc(sizeof(*batch) * CHUNK);
    int sizes[] = {172, 1200};
    for (int suite = 0; suite < 6; suite++) {
        for (int si = 0; si < 2; si++) {
            int size = sizes[si];
            srtp_t tx = session(suite, 1, 1), rx = session(suite, 1, 0), out = session(suite, 2, 1);
            if (!tx || !rx || !out) {
                /* this libsrtp build lacks the suite: say so in every row it would have had */
                const char *ops[] = {"protect", "unprotect", "rekey"};
                for (int o = 0; o < 3; o++) printf(IMPL_NAME "\t%s\t%s\t%d\tNA\n", NAMES[suite], ops[o], size);
                if (tx) srtp_dealloc(tx);
                if (rx) srtp_dealloc(rx);
                if (out) srtp_dealloc(out);
                continue;
            }
            /* protect */
            uint8_t pkt[1200 + ROOM];
            memset(pkt, 0xab, sizeof pkt);
            uint16_t seq = 0;
            double t0 = now_ns();
            for (long i = 0; i < iters; i++) {
                header(pkt, seq++);
                int len = size;
                if (srtp_protect(tx, pkt, &len) != srtp_err_status_ok) { fprintf(stderr, "protect failed\n"); return 1; }
            }
            printf(IMPL_NAME "\t%s\tprotect\t%d\t%.1f\n", NAMES[suite], size, (now_ns() - t0) / iters);
            /* unprotect */
            srtp_dealloc(tx);
            tx = session(suite, 1, 1);
            seq = 0;
            double total = 0;
            for (long done = 0; done < iters; done += CHUNK) {
                if (prepare(tx, &seq, size)) { fprintf(stderr, "prepare failed\n"); return 1; }
                double t = now_ns();
                for (int i = 0; i < CHUNK; i++)
                    if (srtp_unprotect(rx, batch[i], &blen[i]) != srtp_err_status_ok) { fprintf(stderr, "unprotect failed\n"); return 1; }
                total += now_ns() - t;
            }
            printf(IMPL_NAME "\t%s\tunprotect\t%d\t%.1f\n", NAMES[suite], size, total / (((iters + CHUNK - 1) / CHUNK) * CHUNK));
            /* rekey: unprotect with A, protect with B, same buffer */
            srtp_dealloc(tx);
            srtp_dealloc(rx);
            tx = session(suite, 1, 1);
            rx = session(suite, 1, 0);
            seq = 0;
            total = 0;
            for (long done = 0; done < iters; done += CHUNK) {
                if (prepare(tx, &seq, size)) { fprintf(stderr, "prepare failed\n"); return 1; }
                double t = now_ns();
                for (int i = 0; i < CHUNK; i++) {
                    if (srtp_unprotect(rx, batch[i], &blen[i]) != srtp_err_status_ok) { fprintf(stderr, "rekey unprotect failed\n"); return 1; }
                    if (srtp_protect(out, batch[i], &blen[i]) != srtp_err_status_ok) { fprintf(stderr, "rekey protect failed\n"); return 1; }
                }
                total += now_ns() - t;
            }
            printf(IMPL_NAME "\t%s\trekey\t%d\t%.1f\n", NAMES[suite], size, total / (((iters + CHUNK - 1) / CHUNK) * CHUNK));
            srtp_dealloc(tx); srtp_dealloc(rx); srtp_dealloc(out);
        }
    }
    return 0;
}
