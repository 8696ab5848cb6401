//! The primitives under the profiles: AES counter mode (keystream and the RFC 3711 §4.3 key
//! derivation PRF), pre-keyed HMAC-SHA1, and AES-GCM.
//!
//! Backend choice (measured, see perf-lab/srtp): RustCrypto `aes` (AES-NI) for counter mode and
//! `sha1` (SHA-NI) for HMAC; `ring` for GCM, whose stitched AES-GCM assembly is several times
//! faster than a generic GHASH + CTR composition.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use ring::aead;

/// AES in counter mode with a pre-expanded key schedule.
// Kept inline, not boxed: one pointer chase less per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum AesCtr {
    A128(aes::Aes128Enc),
    A256(aes::Aes256Enc),
}

/// Blocks of keystream generated per AES call: enough to keep the AES-NI pipeline full.
const PAR_BLOCKS: usize = 8;

impl AesCtr {
    /// `key` must be 16 or 32 bytes (checked by the caller's profile).
    pub(crate) fn new(key: &[u8]) -> Self {
        match key.len() {
            16 => AesCtr::A128(aes::Aes128Enc::new(GenericArray::from_slice(key))),
            _ => AesCtr::A256(aes::Aes256Enc::new(GenericArray::from_slice(&key[..32]))),
        }
    }

    /// XORs `data` with the keystream that starts at counter block `iv`.
    #[inline]
    pub(crate) fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut ctr = u128::from_be_bytes(*iv);
        let mut ks = [GenericArray::<u8, aes::cipher::consts::U16>::default(); PAR_BLOCKS];
        for chunk in data.chunks_mut(16 * PAR_BLOCKS) {
            let nblocks = chunk.len().div_ceil(16);
            for b in ks.iter_mut().take(nblocks) {
                *b = GenericArray::from(ctr.to_be_bytes());
                ctr = ctr.wrapping_add(1);
            }
            match self {
                AesCtr::A128(c) => c.encrypt_blocks(&mut ks[..nblocks]),
                AesCtr::A256(c) => c.encrypt_blocks(&mut ks[..nblocks]),
            }
            // XOR 16 bytes at a time as one u128; only the last partial block goes bytewise.
            let mut blocks = chunk.chunks_exact_mut(16);
            for (d, k) in blocks.by_ref().zip(ks.iter()) {
                let x = u128::from_ne_bytes(d.try_into().unwrap_or_else(|_| unreachable!()))
                    ^ u128::from_ne_bytes(
                        k.as_slice().try_into().unwrap_or_else(|_| unreachable!()),
                    );
                d.copy_from_slice(&x.to_ne_bytes());
            }
            let tail = blocks.into_remainder();
            if !tail.is_empty() {
                let k = &ks[nblocks - 1];
                for (x, y) in tail.iter_mut().zip(k.iter()) {
                    *x ^= y;
                }
            }
        }
    }
}

/// RFC 3711 §4.3.1 key derivation with the AES-CM PRF, key derivation rate 0: `out` receives
/// the session key (or salt) for `label`. Salts shorter than 14 bytes (GCM's 12) are padded
/// with zeros, as RFC 7714 §11 and libsrtp do.
pub(crate) fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let prf = AesCtr::new(master_key);
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    prf.apply_keystream(&iv, out);
}

/// One SHA-1 compression (`block` is 64 bytes).
#[inline]
fn sha1_block(state: &mut [u32; 5], block: &[u8]) {
    sha1::compress(
        state,
        core::slice::from_ref(GenericArray::from_slice(block)),
    );
}

/// Writes the last partial block(s) of an HMAC inner hash into `tail`: the `rest` of the
/// data, the `trailer`, 0x80, zeros and the bit length (counting the ipad block and
/// `data_len` bytes of data). Returns how many 64-byte blocks that makes (1 or 2).
#[inline]
fn tail_blocks(tail: &mut [u8; 128], rest: &[u8], trailer: &[u8], data_len: usize) -> usize {
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()..rest.len() + trailer.len()].copy_from_slice(trailer);
    let used = rest.len() + trailer.len();
    tail[used] = 0x80;
    let blocks = if used + 9 <= 64 { 1 } else { 2 };
    let bits = ((64 + data_len + trailer.len()) as u64) * 8;
    tail[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
    blocks
}

/// XORs `xor` into `packet[from..to]`, where `xor[0]` lines up with `packet[start]`; bytes
/// before `start` (the clear header) are left alone.
#[inline]
fn xor_from(packet: &mut [u8], from: usize, to: usize, start: usize, xor: &[u8]) {
    let from = from.max(start);
    if from >= to {
        return;
    }
    for (p, k) in packet[from..to]
        .iter_mut()
        .zip(&xor[from - start..to - start])
    {
        *p ^= k;
    }
}

const SHA1_IV: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// Pre-keyed HMAC-SHA1 (RFC 2104): the SHA-1 states after the ipad and opad blocks are
/// computed once per key, so a packet costs only the compressions of its own blocks plus one
/// for the outer hash. Driving `sha1::compress` directly (SHA-NI when the CPU has it) avoids
/// the buffering of the generic `hmac`/`digest` stack, about 40 ns per 172-byte packet.
#[derive(Clone)]
pub(crate) struct HmacSha1 {
    inner: [u32; 5],
    outer: [u32; 5],
}

impl HmacSha1 {
    /// `key` is at most 64 bytes (SRTP auth keys are 20).
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in key.iter().take(64).enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let (mut inner, mut outer) = (SHA1_IV, SHA1_IV);
        sha1_block(&mut inner, &ipad);
        sha1_block(&mut outer, &opad);
        HmacSha1 { inner, outer }
    }

    /// HMAC-SHA1 of `data || trailer` (the trailer is SRTP's ROC, or empty).
    #[inline]
    pub(crate) fn tag(&self, data: &[u8], trailer: &[u8]) -> [u8; 20] {
        let mut state = self.inner;
        let full = data.len() / 64 * 64;
        for block in data[..full].chunks_exact(64) {
            sha1_block(&mut state, block);
        }
        let mut tail = [0u8; 128];
        let blocks = tail_blocks(&mut tail, &data[full..], trailer, data.len());
        for block in tail[..blocks * 64].chunks_exact(64) {
            sha1_block(&mut state, block);
        }
        self.finish(state)
    }

    /// The outer hash over the inner digest `state`: always exactly one block.
    #[inline]
    fn finish(&self, state: [u32; 5]) -> [u8; 20] {
        let mut block = [0u8; 64];
        for (chunk, word) in block.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        block[20] = 0x80;
        block[56..].copy_from_slice(&(((64 + 20) as u64) * 8).to_be_bytes());
        let mut state = self.outer;
        sha1_block(&mut state, &block);
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Re-keys counter-mode SRTP in one pass: returns (HMAC under `self` of the packet as it
    /// arrives, HMAC under `out` of the packet as it leaves), where the packet leaving is the
    /// packet arriving with `xor` applied to `packet[start..]`.
    ///
    /// The two hash chains are advanced block by block in alternation: SHA-1 is bound by the
    /// latency of its round instructions, so two independent chains side by side let the
    /// out-of-order core run one while the other waits, close to halving the hashing time.
    #[inline]
    pub(crate) fn tag_pair(
        &self,
        out: &HmacSha1,
        packet: &mut [u8],
        start: usize,
        xor: &[u8],
        trailer_in: &[u8; 4],
        trailer_out: &[u8; 4],
    ) -> ([u8; 20], [u8; 20]) {
        let (mut a, mut b) = (self.inner, out.inner);
        let len = packet.len();
        let full = len / 64 * 64;
        let mut pos = 0;
        while pos < full {
            sha1_block(&mut a, &packet[pos..pos + 64]);
            xor_from(packet, pos, pos + 64, start, xor);
            sha1_block(&mut b, &packet[pos..pos + 64]);
            pos += 64;
        }
        let mut tail_a = [0u8; 128];
        let blocks = tail_blocks(&mut tail_a, &packet[full..], trailer_in, len);
        xor_from(packet, full, len, start, xor);
        let mut tail_b = [0u8; 128];
        tail_blocks(&mut tail_b, &packet[full..], trailer_out, len);
        for i in 0..blocks {
            sha1_block(&mut a, &tail_a[i * 64..i * 64 + 64]);
            sha1_block(&mut b, &tail_b[i * 64..i * 64 + 64]);
        }
        (self.finish(a), out.finish(b))
    }

    /// Whether the truncated `tag` matches, compared in constant time.
    #[inline]
    pub(crate) fn verify(&self, data: &[u8], trailer: &[u8], tag: &[u8]) -> bool {
        let full = self.tag(data, trailer);
        let diff = full.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        core::hint::black_box(diff) == 0 && !tag.is_empty() && tag.len() <= 20
    }
}

/// AES-GCM key for one of the two AEAD profiles.
pub(crate) fn gcm_key(key: &[u8]) -> aead::LessSafeKey {
    let alg = if key.len() == 16 {
        &aead::AES_128_GCM
    } else {
        &aead::AES_256_GCM
    };
    let unbound =
        aead::UnboundKey::new(alg, key).unwrap_or_else(|_| unreachable!("key length checked"));
    aead::LessSafeKey::new(unbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// RFC 2202 test cases 1 and 2, and a long message crossing block boundaries, against
    /// the generic `hmac` crate.
    #[test]
    fn hmac_sha1_matches_rfc2202_and_the_generic_implementation() {
        let t1 = HmacSha1::new(&[0x0b; 20]).tag(b"Hi There", &[]);
        assert_eq!(t1.to_vec(), hex("b617318655057264e28bc0b6fb378c8ef146be00"));
        let t2 = HmacSha1::new(b"Jefe").tag(b"what do ya want ", b"for nothing?");
        assert_eq!(t2.to_vec(), hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
        use hmac::Mac;
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        for len in 0..data.len() {
            for trailer in [&[][..], &[1, 2, 3, 4][..]] {
                let mut m = <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(&[7; 20]).unwrap();
                m.update(&data[..len]);
                m.update(trailer);
                let want = m.finalize().into_bytes();
                let got = HmacSha1::new(&[7; 20]).tag(&data[..len], trailer);
                assert_eq!(got[..], want[..], "len {len}");
                assert!(HmacSha1::new(&[7; 20]).verify(&data[..len], trailer, &want[..10]));
                let mut bad = want;
                bad[3] ^= 1;
                assert!(!HmacSha1::new(&[7; 20]).verify(&data[..len], trailer, &bad[..4]));
            }
        }
    }

    /// RFC 3711 B.2: AES-CM keystream.
    #[test]
    fn aes_cm_keystream_rfc3711_b2() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        let mut ks = [0u8; 48];
        AesCtr::new(&key).apply_keystream(&iv, &mut ks);
        assert_eq!(
            ks.to_vec(),
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB \
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }
}
