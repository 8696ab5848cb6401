//! The primitives under the profiles: AES counter mode (keystream and the RFC 3711 §4.3 key
//! derivation PRF), pre-keyed HMAC-SHA1, and AES-GCM.
//!
//! Backend choice (measured, see perf-lab/srtp): RustCrypto `aes` (AES-NI) for counter mode and
//! `sha1` (SHA-NI) for HMAC; `ring` for GCM, whose stitched AES-GCM assembly is several times
//! faster than a generic GHASH + CTR composition.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use ring::aead;
use sha1::Sha1;

pub(crate) type HmacSha1 = Hmac<Sha1>;

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
            for (d, k) in chunk.chunks_mut(16).zip(ks.iter()) {
                for (x, y) in d.iter_mut().zip(k.iter()) {
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

/// Pre-keyed HMAC-SHA1: the ipad/opad states are computed once; each packet clones them.
pub(crate) fn hmac_sha1(key: &[u8]) -> HmacSha1 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha1 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
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
