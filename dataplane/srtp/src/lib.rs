//! # edgeway-srtp
//!
//! The media crypto engine of edgeway: zero-copy RTP/RTCP views, SRTP/SRTCP protection and
//! unprotection (RFC 3711, RFC 6188, RFC 7714), in-place re-keying between two legs, SDES key
//! material (RFC 4568) and per-stream state that can be checkpointed and restored.
//!
//! The crate is sans-IO: it never touches a socket, a clock or a thread. The caller owns the
//! packet buffer and drives a [`SrtpContext`] (one per direction of a leg) with
//! `protect_*`/`unprotect_*` calls, or moves a packet from one leg's keys to another's with
//! [`rekey_rtp`]/[`rekey_rtcp`]. Every call works in place on `buf[..len]`, with the spare room
//! after `len` used for the SRTP trailer; none of them allocates.
//!
//! Randomness (fresh SDES keys) comes from a caller-supplied CSPRNG.
//!
//! ```
//! use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};
//! let profile = SrtpProfile::AesCm128HmacSha1_80;
//! let key = MasterKey::new(profile, &[7; 16], &[9; 14]).unwrap();
//! let mut tx = SrtpContext::new(&SrtpConfig::new(profile, key.clone())).unwrap();
//! let mut rx = SrtpContext::new(&SrtpConfig::new(profile, key)).unwrap();
//! let mut buf = [0u8; 256];
//! buf[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
//! let len = tx.protect_rtp(&mut buf, 172).unwrap();
//! assert_eq!(len, 182);
//! assert_eq!(rx.unprotect_rtp(&mut buf, len).unwrap(), 172);
//! ```
#![forbid(unsafe_code)]

mod context;
mod crypto;
mod error;
mod profile;
mod replay;
pub mod rtcp;
pub mod rtp;
pub mod sdes;

pub use context::{
    rekey_rtcp, rekey_rtp, LegCrypto, MasterKey, SrtpConfig, SrtpContext, StreamCheckpoint,
    StreamKind, MAX_MKI_LEN, MAX_TRAILER_LEN,
};
pub use error::Error;
pub use profile::SrtpProfile;
pub use replay::MAX_REPLAY_WINDOW;

/// Entry points below the normal API, for known-answer tests against published vectors.
/// Nothing here belongs in a media path: keys given directly skip the key derivation that
/// keeps session keys fresh.
#[doc(hidden)]
pub mod danger {
    use crate::{Error, SrtpContext, SrtpProfile};

    /// RFC 3711 §4.3.1 AES-CM PRF output for `label` (key derivation rate 0).
    pub fn derive_session_key(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
        crate::crypto::derive(master_key, master_salt, label, out);
    }

    /// AES counter-mode keystream starting at counter block `iv`, XORed into `data`.
    pub fn aes_cm_keystream(key: &[u8], iv: &[u8; 16], data: &mut [u8]) {
        crate::crypto::AesCtr::new(key).apply_keystream(iv, data);
    }

    /// A context with session keys given directly (RTP and RTCP share them).
    pub fn context_from_session_keys(
        profile: SrtpProfile,
        enc_key: &[u8],
        salt: &[u8],
        auth_key: &[u8],
    ) -> Result<SrtpContext, Error> {
        SrtpContext::danger_from_session_keys(profile, enc_key, salt, auth_key)
    }
}
