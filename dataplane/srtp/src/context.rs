//! SRTP/SRTCP contexts: session keys derived from master keys, per-SSRC stream state (ROC,
//! replay window), and the in-place protect / unprotect / re-key operations.
//!
//! A context serves one direction: protect with the context of the outgoing leg, unprotect
//! with the context of the incoming one. Stream state is kept in a table preallocated at
//! creation, so no packet ever allocates, not even the first packet of a new SSRC.

use ring::aead;

use crate::crypto::{self, AesCtr, GcmPassKey, HmacSha1};
use crate::replay::{ReplayWindow, MAX_REPLAY_WINDOW, WINDOW_WORDS};
use crate::{rtcp, rtp, Error, SrtpProfile};

/// The longest MKI edgeway accepts, in bytes.
pub const MAX_MKI_LEN: usize = 4;
/// The most bytes protection may add to a packet: SRTCP index, MKI and a 16-byte tag.
pub const MAX_TRAILER_LEN: usize = 4 + MAX_MKI_LEN + 16;

const SRTCP_E_FLAG: u32 = 0x8000_0000;
const SRTCP_INDEX_MAX: u64 = 0x7fff_ffff;
/// Highest SRTP packet index (ROC << 16 | SEQ, 48 bits).
const SRTP_INDEX_MAX: u64 = (1 << 48) - 1;

/// A master key and salt, with the MKI that names it on the wire (if MKI is used).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; 32],
    key_len: u8,
    salt: [u8; 14],
    salt_len: u8,
    mki: [u8; MAX_MKI_LEN],
    mki_len: u8,
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.debug_struct("MasterKey")
            .field("key_len", &self.key_len)
            .field("salt_len", &self.salt_len)
            .field("mki", &self.mki())
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key for `profile`; key and salt lengths must match the profile.
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        let check = |what, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(Error::KeyLength {
                    what,
                    profile: profile.sdes_name(),
                    expected,
                    got,
                })
            }
        };
        check("master key", profile.master_key_len(), key.len())?;
        check("master salt", profile.master_salt_len(), salt.len())?;
        let mut mk = MasterKey {
            key: [0; 32],
            key_len: key.len() as u8,
            salt: [0; 14],
            salt_len: salt.len() as u8,
            mki: [0; MAX_MKI_LEN],
            mki_len: 0,
        };
        mk.key[..key.len()].copy_from_slice(key);
        mk.salt[..salt.len()].copy_from_slice(salt);
        Ok(mk)
    }

    /// Splits the concatenated `key || salt` form that SDES and libsrtp use.
    pub fn from_concatenated(profile: SrtpProfile, key_salt: &[u8]) -> Result<Self, Error> {
        let kl = profile.master_key_len();
        if key_salt.len() != kl + profile.master_salt_len() {
            return Err(Error::KeyLength {
                what: "master key and salt",
                profile: profile.sdes_name(),
                expected: kl + profile.master_salt_len(),
                got: key_salt.len(),
            });
        }
        Self::new(profile, &key_salt[..kl], &key_salt[kl..])
    }

    /// Names the key with an MKI of 1 to [`MAX_MKI_LEN`] bytes.
    pub fn with_mki(mut self, mki: &[u8]) -> Result<Self, Error> {
        if mki.is_empty() || mki.len() > MAX_MKI_LEN {
            return Err(Error::KeyLength {
                what: "MKI",
                profile: "any profile",
                expected: MAX_MKI_LEN,
                got: mki.len(),
            });
        }
        self.mki[..mki.len()].copy_from_slice(mki);
        self.mki_len = mki.len() as u8;
        Ok(self)
    }

    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }
    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..usize::from(self.salt_len)]
    }
    /// The MKI, empty when none.
    pub fn mki(&self) -> &[u8] {
        &self.mki[..usize::from(self.mki_len)]
    }
}

/// Everything a context needs besides the keys' secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrtpConfig {
    /// The protection profile.
    pub profile: SrtpProfile,
    /// Master keys; the first protects outgoing packets. With more than one, all must carry
    /// MKIs of the same length and incoming packets pick theirs by MKI.
    pub keys: Vec<MasterKey>,
    /// Replay window in packets (RFC 3711 minimum 64, at most [`MAX_REPLAY_WINDOW`]).
    /// The default of 1024 absorbs the reordering of video key-frame bursts.
    pub replay_window: u32,
    /// SSRCs tracked per context; the least recently used is evicted when a new one arrives.
    pub max_streams: usize,
    /// Allow protecting the same index twice (retransmission). Off by default: reusing an
    /// index with different content reuses keystream.
    pub allow_repeat_tx: bool,
    /// Encrypt SRTP payloads (false: RFC 4568 `UNENCRYPTED_SRTP`, counter-mode profiles only).
    pub encrypt_rtp: bool,
    /// Encrypt SRTCP (false: RFC 4568 `UNENCRYPTED_SRTCP`, counter-mode profiles only).
    pub encrypt_rtcp: bool,
}

impl SrtpConfig {
    /// A configuration with one master key and the defaults.
    pub fn new(profile: SrtpProfile, key: MasterKey) -> Self {
        SrtpConfig {
            profile,
            keys: vec![key],
            replay_window: 1024,
            max_streams: 4,
            allow_repeat_tx: false,
            encrypt_rtp: true,
            encrypt_rtcp: true,
        }
    }
}

/// Session keys derived from one master key.
// Kept inline, not boxed: one pointer chase less per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum SessionKeys {
    Cm {
        rtp_cipher: AesCtr,
        rtp_auth: HmacSha1,
        rtp_salt: [u8; 14],
        rtcp_cipher: AesCtr,
        rtcp_auth: HmacSha1,
        rtcp_salt: [u8; 14],
    },
    Gcm {
        rtp: aead::LessSafeKey,
        /// The RTP key again, for the one-pass re-key of small packets.
        rtp_pass: GcmPassKey,
        rtp_salt: [u8; 12],
        rtcp: aead::LessSafeKey,
        rtcp_salt: [u8; 12],
    },
}

impl SessionKeys {
    fn derive(profile: SrtpProfile, mk: &MasterKey) -> Self {
        let (key, salt) = (mk.key(), mk.salt());
        let mut enc = [0u8; 32];
        let enc = &mut enc[..profile.master_key_len()];
        if profile.is_aead() {
            let mut rtp_salt = [0u8; 12];
            let mut rtcp_salt = [0u8; 12];
            crypto::derive(key, salt, 0, enc);
            let rtp = crypto::gcm_key(enc);
            let rtp_pass = GcmPassKey::new(enc);
            crypto::derive(key, salt, 2, &mut rtp_salt);
            crypto::derive(key, salt, 3, enc);
            let rtcp = crypto::gcm_key(enc);
            crypto::derive(key, salt, 5, &mut rtcp_salt);
            enc.fill(0);
            SessionKeys::Gcm {
                rtp,
                rtp_pass,
                rtp_salt,
                rtcp,
                rtcp_salt,
            }
        } else {
            let mut auth = [0u8; 20];
            let mut rtp_salt = [0u8; 14];
            let mut rtcp_salt = [0u8; 14];
            crypto::derive(key, salt, 0, enc);
            let rtp_cipher = AesCtr::new(enc);
            crypto::derive(key, salt, 1, &mut auth);
            let rtp_auth = HmacSha1::new(&auth);
            crypto::derive(key, salt, 2, &mut rtp_salt);
            crypto::derive(key, salt, 3, enc);
            let rtcp_cipher = AesCtr::new(enc);
            crypto::derive(key, salt, 4, &mut auth);
            let rtcp_auth = HmacSha1::new(&auth);
            crypto::derive(key, salt, 5, &mut rtcp_salt);
            enc.fill(0);
            auth.fill(0);
            SessionKeys::Cm {
                rtp_cipher,
                rtp_auth,
                rtp_salt,
                rtcp_cipher,
                rtcp_auth,
                rtcp_salt,
            }
        }
    }
}

impl SessionKeys {
    /// Session keys given directly (test vectors state them below the KDF).
    fn from_session(profile: SrtpProfile, enc: &[u8], salt: &[u8], auth: &[u8]) -> Self {
        if profile.is_aead() {
            let mut s = [0u8; 12];
            s.copy_from_slice(&salt[..12]);
            SessionKeys::Gcm {
                rtp: crypto::gcm_key(enc),
                rtp_pass: GcmPassKey::new(enc),
                rtp_salt: s,
                rtcp: crypto::gcm_key(enc),
                rtcp_salt: s,
            }
        } else {
            let mut s = [0u8; 14];
            s.copy_from_slice(&salt[..14]);
            SessionKeys::Cm {
                rtp_cipher: AesCtr::new(enc),
                rtp_auth: HmacSha1::new(auth),
                rtp_salt: s,
                rtcp_cipher: AesCtr::new(enc),
                rtcp_auth: HmacSha1::new(auth),
                rtcp_salt: s,
            }
        }
    }
}

/// Replay and rollover state of one SSRC in one direction.
#[derive(Clone, Debug)]
struct Stream {
    ssrc: u32,
    window: ReplayWindow,
    last_used: u64,
}

/// Whether a checkpoint belongs to the SRTP or the SRTCP stream table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// SRTP: the index is ROC << 16 | SEQ.
    Rtp,
    /// SRTCP: the index is the 31-bit SRTCP index.
    Rtcp,
}

/// The resumable state of one stream: enough for a restarted worker to continue without
/// replay or rollover errors. Plain data; copy it wherever checkpoints are kept.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StreamCheckpoint {
    /// SRTP or SRTCP.
    pub kind: StreamKind,
    /// The stream's SSRC.
    pub ssrc: u32,
    /// Highest index accepted (SRTP: ROC << 16 | SEQ).
    pub highest_index: u64,
    /// Replay bitmap (ring indexed by `index % MAX_REPLAY_WINDOW`).
    pub window: [u64; WINDOW_WORDS],
}

impl core::fmt::Debug for StreamCheckpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamCheckpoint")
            .field("kind", &self.kind)
            .field("ssrc", &format_args!("{:#010x}", self.ssrc))
            .field("highest_index", &self.highest_index)
            .finish_non_exhaustive()
    }
}

impl StreamCheckpoint {
    /// The rollover counter (SRTP streams).
    pub fn roc(&self) -> u32 {
        (self.highest_index >> 16) as u32
    }

    /// A checkpoint from its compact form (the flow table's): the highest index and the replay
    /// bits of the 128 indices up to it (bit `i` of `recent`: `highest_index - i` was seen).
    /// Every older index of the window is treated as seen, so a restored receiver can only
    /// refuse a late packet it had in fact not seen, never accept a replay.
    pub fn from_recent(kind: StreamKind, ssrc: u32, highest_index: u64, recent: [u64; 2]) -> Self {
        let mut window = [u64::MAX; WINDOW_WORDS];
        for i in 0..128u64.min(highest_index.saturating_add(1)) {
            let pos = (highest_index - i) % u64::from(MAX_REPLAY_WINDOW);
            let (word, bit) = ((pos / 64) as usize, pos % 64);
            if recent[(i / 64) as usize] & (1 << (i % 64)) == 0 {
                window[word] &= !(1 << bit);
            }
        }
        StreamCheckpoint {
            kind,
            ssrc,
            highest_index,
            window,
        }
    }

    /// The compact form of the window: bit `i` set when `highest_index - i` was seen, for the
    /// 128 indices up to the highest (the inverse of [`StreamCheckpoint::from_recent`]).
    pub fn recent(&self) -> [u64; 2] {
        recent_bits(&self.window, self.highest_index)
    }
}

/// The 128 replay bits up to `highest` in compact form (bit `i`: `highest - i` was seen) from
/// the ring bitmap, a word at a time: the checkpoint export runs for every active flow many
/// times a second, so this must not walk the bits one by one.
#[inline]
fn recent_bits(window: &[u64; WINDOW_WORDS], highest: u64) -> [u64; 2] {
    let ring = u64::from(MAX_REPLAY_WINDOW);
    // The 64 ring bits starting at ring position `start` (wrapping), lowest index first.
    let bits64 = |start: u64| -> u64 {
        let word = (start / 64) as usize % WINDOW_WORDS;
        let shift = start % 64;
        let lo = window[word] >> shift;
        if shift == 0 {
            lo
        } else {
            lo | window[(word + 1) % WINDOW_WORDS] << (64 - shift)
        }
    };
    // Indices highest-127 ..= highest, oldest in bit 0; reversed, bit i is highest - i.
    let start = (highest % ring + ring - 127) % ring;
    let span = u128::from(bits64(start)) | u128::from(bits64((start + 64) % ring)) << 64;
    let mut recent = span.reverse_bits();
    if highest < 127 {
        // Indices below zero never existed.
        recent &= (1u128 << (highest + 1)) - 1;
    }
    [recent as u64, (recent >> 64) as u64]
}

/// Fixed-capacity SSRC table with least-recently-used eviction.
#[derive(Clone, Debug)]
struct Streams {
    list: Vec<Stream>,
    cap: usize,
    tick: u64,
}

impl Streams {
    fn new(cap: usize) -> Self {
        Streams {
            list: Vec::with_capacity(cap),
            cap,
            tick: 0,
        }
    }

    #[inline]
    fn find(&self, ssrc: u32) -> Option<usize> {
        self.list.iter().position(|s| s.ssrc == ssrc)
    }

    /// The slot for `ssrc`, creating it (evicting the least recently used) if needed.
    #[inline]
    fn slot(&mut self, ssrc: u32) -> usize {
        self.tick += 1;
        let i = match self.find(ssrc) {
            Some(i) => i,
            None if self.list.len() < self.cap => {
                self.list.push(Stream {
                    ssrc,
                    window: ReplayWindow::new(),
                    last_used: 0,
                });
                self.list.len() - 1
            }
            None => {
                let (i, _) = self
                    .list
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_used)
                    .unwrap_or((0, &self.list[0]));
                self.list[i] = Stream {
                    ssrc,
                    window: ReplayWindow::new(),
                    last_used: 0,
                };
                i
            }
        };
        self.list[i].last_used = self.tick;
        i
    }
}

/// One direction of SRTP protection for one leg: keys, profile and per-SSRC state.
#[derive(Clone)]
pub struct SrtpContext {
    profile: SrtpProfile,
    /// (MKI, keys); the first protects.
    keys: Vec<(MasterKey, SessionKeys)>,
    mki_len: usize,
    window: u32,
    allow_repeat_tx: bool,
    encrypt_rtp: bool,
    encrypt_rtcp: bool,
    rtp: Streams,
    rtcp: Streams,
    /// Above every SRTCP index this context has sent or restored: where an outbound stream
    /// it holds no state for (new, evicted, or not checkpointed) starts.
    rtcp_send_floor: u64,
}

impl core::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("keys", &self.keys.len())
            .field("mki_len", &self.mki_len)
            .field("rtp_streams", &self.rtp.list.len())
            .field("rtcp_streams", &self.rtcp.list.len())
            .finish_non_exhaustive()
    }
}

/// RFC 3711 §3.3.1 / Appendix A: the index of `seq` given the highest index seen.
#[inline]
fn estimate_index(window: &ReplayWindow, seq: u16) -> Result<u64, Error> {
    if !window.started {
        return Ok(u64::from(seq));
    }
    let roc = window.highest >> 16;
    let s_l = window.highest as u16;
    let v = if s_l < 0x8000 {
        if u32::from(seq) > u32::from(s_l) + 0x8000 {
            match roc.checked_sub(1) {
                Some(v) => v,
                // Would precede index 0: treat it as older than anything we accept.
                None => {
                    return Err(Error::TooOld {
                        index: u64::from(seq),
                    })
                }
            }
        } else {
            roc
        }
    } else if u32::from(s_l) - 0x8000 > u32::from(seq) {
        (roc + 1) & 0xffff_ffff
    } else {
        roc
    };
    Ok((v << 16) | u64::from(seq))
}

#[inline]
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..8]) {
        *d ^= s;
    }
    iv
}

#[inline]
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, high: u32, low: u32) -> aead::Nonce {
    aead::Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, high, low))
}

/// The RFC 7714 §8.1 / §9.1 IV. SRTP: 00 00 || SSRC || ROC || SEQ, the caller passing ROC's
/// high half in `high`; SRTCP: 00 00 || SSRC || 00 00 || index.
#[inline]
fn gcm_iv(salt: &[u8; 12], ssrc: u32, high: u32, low: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[2..6].copy_from_slice(&ssrc.to_be_bytes());
    n[6..8].copy_from_slice(&high.to_be_bytes()[2..4]);
    n[8..12].copy_from_slice(&low.to_be_bytes());
    for (d, s) in n.iter_mut().zip(salt) {
        *d ^= s;
    }
    n
}

#[inline]
fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl SrtpContext {
    /// Derives the session keys and preallocates the stream tables.
    pub fn new(config: &SrtpConfig) -> Result<Self, Error> {
        let profile = config.profile;
        let Some(first) = config.keys.first() else {
            return Err(Error::Config("no master key"));
        };
        let mki_len = first.mki().len();
        if config.keys.len() > 1 && mki_len == 0 {
            return Err(Error::Config(
                "several master keys need MKIs to tell them apart",
            ));
        }
        if config.keys.iter().any(|k| k.mki().len() != mki_len) {
            return Err(Error::Config(
                "all MKIs of a context must have the same length",
            ));
        }
        if !(64..=MAX_REPLAY_WINDOW).contains(&config.replay_window) {
            return Err(Error::Config("replay window must be 64 to 4096 packets"));
        }
        if config.max_streams == 0 {
            return Err(Error::Config("max_streams must be at least 1"));
        }
        if profile.is_aead() && !(config.encrypt_rtp && config.encrypt_rtcp) {
            return Err(Error::Config(
                "unencrypted modes are not supported with AEAD profiles",
            ));
        }
        let mut keys = Vec::with_capacity(config.keys.len());
        for mk in &config.keys {
            MasterKey::new(profile, mk.key(), mk.salt())?;
            keys.push((mk.clone(), SessionKeys::derive(profile, mk)));
        }
        Ok(SrtpContext {
            profile,
            keys,
            mki_len,
            window: config.replay_window,
            allow_repeat_tx: config.allow_repeat_tx,
            encrypt_rtp: config.encrypt_rtp,
            encrypt_rtcp: config.encrypt_rtcp,
            rtp: Streams::new(config.max_streams),
            rtcp: Streams::new(config.max_streams),
            rtcp_send_floor: 1,
        })
    }

    /// A context whose RTP and RTCP session keys are given directly, bypassing key derivation.
    /// Only for known-answer tests: real sessions derive keys from a master key.
    pub(crate) fn danger_from_session_keys(
        profile: SrtpProfile,
        enc: &[u8],
        salt: &[u8],
        auth: &[u8],
    ) -> Result<Self, Error> {
        let placeholder = MasterKey::new(
            profile,
            &[0; 32][..profile.master_key_len()],
            &[0; 14][..profile.master_salt_len()],
        )?;
        if enc.len() != profile.master_key_len() || salt.len() != profile.master_salt_len() {
            return Err(Error::Config(
                "session key or salt length does not match the profile",
            ));
        }
        let mut ctx = SrtpContext::new(&SrtpConfig::new(profile, placeholder.clone()))?;
        ctx.keys[0] = (
            placeholder,
            SessionKeys::from_session(profile, enc, salt, auth),
        );
        Ok(ctx)
    }

    /// The context's profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    #[inline]
    fn key_for_mki(&self, mki: &[u8]) -> Result<&SessionKeys, Error> {
        Ok(&self.keys[self.key_index_for_mki(mki)?].1)
    }

    /// Where in `keys` the key that `mki` names is.
    #[inline]
    fn key_index_for_mki(&self, mki: &[u8]) -> Result<usize, Error> {
        if self.keys.len() == 1 {
            // A single key: the MKI must still name it when MKIs are in use. No MKI is the
            // common case: answer it without a call to memcmp.
            let own = self.keys[0].0.mki();
            return if own.len() == mki.len() && (own.is_empty() || own == mki) {
                Ok(0)
            } else {
                Err(Error::UnknownMki)
            };
        }
        self.keys
            .iter()
            .position(|(mk, _)| mk.mki() == mki)
            .ok_or(Error::UnknownMki)
    }

    /// The RTP header length and the length without the trailer (MKI, tag) of the arriving
    /// SRTP packet in `buf[..len]`, refused if the header is malformed or the trailer missing.
    #[inline]
    fn arriving_layout(&self, buf: &[u8], len: usize) -> Result<(usize, usize), Error> {
        let pkt = buf.get(..len).ok_or(Error::BufferTooSmall {
            needed: len,
            cap: buf.len(),
        })?;
        let hdr = rtp::header_len(pkt)?;
        let trailer = self.mki_len + self.profile.rtp_tag_len();
        let min = hdr + trailer;
        if len < min {
            return Err(Error::TooShort { len, min });
        }
        Ok((hdr, len - trailer))
    }

    /// The index of an arriving SRTP packet (RFC 3711 §3.3.1), refused if the replay window
    /// has seen it or left it behind, with the slot of its stream if it has one. Changes
    /// nothing: the window only advances once the packet authenticates.
    #[inline]
    fn arriving_index(&self, ssrc: u32, seq: u16) -> Result<(Option<usize>, u64), Error> {
        let Some(i) = self.rtp.find(ssrc) else {
            return Ok((None, u64::from(seq)));
        };
        let w = &self.rtp.list[i].window;
        let index = estimate_index(w, seq)?;
        w.check(index, self.window)?;
        Ok((Some(i), index))
    }

    /// Protects the RTP packet in `buf[..len]` in place and returns the SRTP length. `buf`
    /// must have room for the tag and MKI after `len` ([`MAX_TRAILER_LEN`] always suffices).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let pkt = buf.get(..len).ok_or(Error::BufferTooSmall {
            needed: len,
            cap: buf.len(),
        })?;
        let hdr = rtp::header_len(pkt)?;
        let tag_len = self.profile.rtp_tag_len();
        let out_len = len + self.mki_len + tag_len;
        if out_len > buf.len() {
            return Err(Error::BufferTooSmall {
                needed: out_len,
                cap: buf.len(),
            });
        }
        let ssrc = read_u32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let slot = self.rtp.slot(ssrc);
        let stream = &mut self.rtp.list[slot];
        let index = estimate_index(&stream.window, seq)?;
        if !self.allow_repeat_tx {
            stream.window.check(index, self.window)?;
        }
        stream.window.accept(index);
        let roc = (index >> 16) as u32;
        let (mk, keys) = &self.keys[0];
        match keys {
            SessionKeys::Cm {
                rtp_cipher,
                rtp_auth,
                rtp_salt,
                ..
            } => {
                let tag = crypto::encrypt_then_tag(
                    self.encrypt_rtp.then_some(rtp_cipher),
                    rtp_auth,
                    &cm_iv(rtp_salt, ssrc, index),
                    &mut buf[..len],
                    hdr,
                    &roc.to_be_bytes(),
                );
                buf[len..len + self.mki_len].copy_from_slice(mk.mki());
                buf[len + self.mki_len..out_len].copy_from_slice(&tag[..tag_len]);
            }
            SessionKeys::Gcm { rtp, rtp_salt, .. } => {
                let nonce = gcm_nonce(rtp_salt, ssrc, roc >> 16, (roc << 16) | u32::from(seq));
                let (head, body) = buf.split_at_mut(hdr);
                let tag = rtp
                    .seal_in_place_separate_tag(
                        nonce,
                        aead::Aad::from(&*head),
                        &mut body[..len - hdr],
                    )
                    .map_err(|_| Error::BufferTooSmall {
                        needed: len,
                        cap: 1 << 36,
                    })?;
                buf[len..len + tag_len].copy_from_slice(tag.as_ref());
                buf[len + tag_len..out_len].copy_from_slice(mk.mki());
            }
        }
        Ok(out_len)
    }

    /// Verifies and decrypts the SRTP packet in `buf[..len]` in place and returns the RTP
    /// length. Nothing in the context changes unless the packet authenticates.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let (hdr, plain_len) = self.arriving_layout(buf, len)?;
        let tag_len = self.profile.rtp_tag_len();
        let ssrc = read_u32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let (existing, index) = self.arriving_index(ssrc, seq)?;
        let roc = (index >> 16) as u32;
        match self.profile.is_aead() {
            false => {
                let mki = &buf[plain_len..plain_len + self.mki_len];
                let SessionKeys::Cm {
                    rtp_cipher,
                    rtp_auth,
                    rtp_salt,
                    ..
                } = self.key_for_mki(mki)?
                else {
                    unreachable!("counter-mode profile has counter-mode keys")
                };
                let (packet, trailer) = buf[..len].split_at_mut(plain_len);
                if !crypto::verify_then_decrypt(
                    self.encrypt_rtp.then_some(rtp_cipher),
                    rtp_auth,
                    &cm_iv(rtp_salt, ssrc, index),
                    packet,
                    hdr,
                    &roc.to_be_bytes(),
                    &trailer[trailer.len() - tag_len..],
                ) {
                    return Err(Error::AuthFailed);
                }
            }
            true => {
                let mki = &buf[len - self.mki_len..len];
                let SessionKeys::Gcm { rtp, rtp_salt, .. } = self.key_for_mki(mki)? else {
                    unreachable!("AEAD profile has AEAD keys")
                };
                let nonce = gcm_nonce(rtp_salt, ssrc, roc >> 16, (roc << 16) | u32::from(seq));
                let (head, body) = buf.split_at_mut(hdr);
                rtp.open_in_place(
                    nonce,
                    aead::Aad::from(&*head),
                    &mut body[..len - self.mki_len - hdr],
                )
                .map_err(|_| Error::AuthFailed)?;
            }
        }
        let slot = match existing {
            Some(i) => {
                self.rtp.tick += 1;
                self.rtp.list[i].last_used = self.rtp.tick;
                i
            }
            None => self.rtp.slot(ssrc),
        };
        self.rtp.list[slot].window.accept(index);
        Ok(plain_len)
    }

    /// Protects the compound RTCP packet in `buf[..len]` in place and returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let pkt = buf.get(..len).ok_or(Error::BufferTooSmall {
            needed: len,
            cap: buf.len(),
        })?;
        let ssrc = rtcp::check_first_header(pkt)?;
        let tag_len = self.profile.rtcp_tag_len();
        let out_len = len + 4 + self.mki_len + tag_len;
        if out_len > buf.len() {
            return Err(Error::BufferTooSmall {
                needed: out_len,
                cap: buf.len(),
            });
        }
        let slot = self.rtcp.slot(ssrc);
        let window = &mut self.rtcp.list[slot].window;
        let index = if window.started {
            window.highest + 1
        } else {
            self.rtcp_send_floor
        };
        if index > SRTCP_INDEX_MAX {
            return Err(Error::IndexExhausted);
        }
        window.accept(index);
        self.rtcp_send_floor = self.rtcp_send_floor.max(index + 1);
        let (mk, keys) = &self.keys[0];
        let const_e = if self.encrypt_rtcp { SRTCP_E_FLAG } else { 0 };
        let e_index = (const_e | index as u32).to_be_bytes();
        const CLEAR: usize = rtcp::SRTCP_CLEAR_LEN;
        match keys {
            SessionKeys::Cm {
                rtcp_cipher,
                rtcp_auth,
                rtcp_salt,
                ..
            } => {
                buf[len..len + 4].copy_from_slice(&e_index);
                // The E flag and index follow the packet in the authenticated portion.
                let tag = crypto::encrypt_then_tag(
                    self.encrypt_rtcp.then_some(rtcp_cipher),
                    rtcp_auth,
                    &cm_iv(rtcp_salt, ssrc, index),
                    &mut buf[..len],
                    CLEAR,
                    &e_index,
                );
                buf[len + 4..len + 4 + self.mki_len].copy_from_slice(mk.mki());
                buf[len + 4 + self.mki_len..out_len].copy_from_slice(&tag[..tag_len]);
            }
            SessionKeys::Gcm {
                rtcp, rtcp_salt, ..
            } => {
                let nonce = gcm_nonce(rtcp_salt, ssrc, 0, index as u32);
                let mut aad = [0u8; CLEAR + 4];
                aad[..CLEAR].copy_from_slice(&buf[..CLEAR]);
                aad[CLEAR..].copy_from_slice(&e_index);
                let tag = rtcp
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), &mut buf[CLEAR..len])
                    .map_err(|_| Error::BufferTooSmall {
                        needed: len,
                        cap: 1 << 36,
                    })?;
                buf[len..len + tag_len].copy_from_slice(tag.as_ref());
                buf[len + tag_len..len + tag_len + 4].copy_from_slice(&e_index);
                buf[len + tag_len + 4..out_len].copy_from_slice(mk.mki());
            }
        }
        Ok(out_len)
    }

    /// Verifies and decrypts the SRTCP packet in `buf[..len]` in place and returns the RTCP
    /// length. Honours the E flag of the packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let pkt = buf.get(..len).ok_or(Error::BufferTooSmall {
            needed: len,
            cap: buf.len(),
        })?;
        let ssrc = rtcp::check_first_header(pkt)?;
        let tag_len = self.profile.rtcp_tag_len();
        const CLEAR: usize = rtcp::SRTCP_CLEAR_LEN;
        let min = CLEAR + 4 + self.mki_len + tag_len;
        if len < min {
            return Err(Error::TooShort { len, min });
        }
        let plain_len = len - 4 - self.mki_len - tag_len;
        // Counter mode: ... | E+index | MKI | tag.  GCM: ... | tag | E+index | MKI.
        let idx_at = if self.profile.is_aead() {
            plain_len + tag_len
        } else {
            plain_len
        };
        let e_index = read_u32(&buf[idx_at..idx_at + 4]);
        let encrypted = e_index & SRTCP_E_FLAG != 0;
        let index = u64::from(e_index & !SRTCP_E_FLAG);
        let existing = self.rtcp.find(ssrc);
        if let Some(i) = existing {
            self.rtcp.list[i].window.check(index, self.window)?;
        }
        match self.profile.is_aead() {
            false => {
                let mki = &buf[plain_len + 4..plain_len + 4 + self.mki_len];
                let SessionKeys::Cm {
                    rtcp_cipher,
                    rtcp_auth,
                    rtcp_salt,
                    ..
                } = self.key_for_mki(mki)?
                else {
                    unreachable!("counter-mode profile has counter-mode keys")
                };
                let (packet, trailer) = buf[..len].split_at_mut(plain_len);
                if !crypto::verify_then_decrypt(
                    encrypted.then_some(rtcp_cipher),
                    rtcp_auth,
                    &cm_iv(rtcp_salt, ssrc, index),
                    packet,
                    CLEAR,
                    &trailer[..4],
                    &trailer[trailer.len() - tag_len..],
                ) {
                    return Err(Error::AuthFailed);
                }
            }
            true => {
                let mki = &buf[len - self.mki_len..len];
                let SessionKeys::Gcm {
                    rtcp, rtcp_salt, ..
                } = self.key_for_mki(mki)?
                else {
                    unreachable!("AEAD profile has AEAD keys")
                };
                let nonce = gcm_nonce(rtcp_salt, ssrc, 0, index as u32);
                if encrypted {
                    let mut aad = [0u8; CLEAR + 4];
                    aad[..CLEAR].copy_from_slice(&buf[..CLEAR]);
                    aad[CLEAR..].copy_from_slice(&e_index.to_be_bytes());
                    rtcp.open_in_place(
                        nonce,
                        aead::Aad::from(aad),
                        &mut buf[CLEAR..plain_len + tag_len],
                    )
                    .map_err(|_| Error::AuthFailed)?;
                } else {
                    // RFC 7714 §9.2, authentication only: the whole packet and the E+index
                    // word are associated data. Move the tag aside so they are contiguous.
                    let mut tag = [0u8; 16];
                    tag.copy_from_slice(&buf[plain_len..plain_len + 16]);
                    buf[plain_len..plain_len + 4].copy_from_slice(&e_index.to_be_bytes());
                    rtcp.open_in_place(nonce, aead::Aad::from(&buf[..plain_len + 4]), &mut tag)
                        .map_err(|_| Error::AuthFailed)?;
                }
            }
        }
        let slot = match existing {
            Some(i) => i,
            None => self.rtcp.slot(ssrc),
        };
        self.rtcp.list[slot].window.accept(index);
        Ok(plain_len)
    }

    /// The compact checkpoint of one stream (its highest index and the 128 recent replay bits,
    /// as [`StreamCheckpoint::recent`]) without copying its whole window: what the data plane
    /// exports for every active flow. `None` if the stream has not started.
    pub fn compact_checkpoint(&self, kind: StreamKind, ssrc: u32) -> Option<(u64, [u64; 2])> {
        let streams = match kind {
            StreamKind::Rtp => &self.rtp,
            StreamKind::Rtcp => &self.rtcp,
        };
        streams
            .list
            .iter()
            .find(|s| s.ssrc == ssrc && s.window.started)
            .map(|s| {
                (
                    s.window.highest,
                    recent_bits(&s.window.bits, s.window.highest),
                )
            })
    }

    /// The state of every stream, for a checkpoint.
    pub fn checkpoints(&self) -> impl Iterator<Item = StreamCheckpoint> + '_ {
        let rtp = self.rtp.list.iter().map(|s| (StreamKind::Rtp, s));
        let rtcp = self.rtcp.list.iter().map(|s| (StreamKind::Rtcp, s));
        rtp.chain(rtcp)
            .filter(|(_, s)| s.window.started)
            .map(|(kind, s)| StreamCheckpoint {
                kind,
                ssrc: s.ssrc,
                highest_index: s.window.highest,
                window: s.window.bits,
            })
    }

    /// The SRTCP index an outbound stream this context holds no state for would start at:
    /// above every index it has sent or restored. SRTCP indices are the sender's own count,
    /// so a sender that loses a stream's state (restart without its checkpoint, eviction)
    /// must never count from 1 again: that would reuse keystream, and the receiver would
    /// drop the packets as replays. Export this with the checkpoints.
    pub fn srtcp_send_next(&self) -> u64 {
        self.rtcp_send_floor
    }

    /// Raises [`SrtpContext::srtcp_send_next`] to at least `floor` (clamped to the index
    /// space): a restored sender passes what it exported plus a margin for what it sent
    /// after the export.
    pub fn raise_srtcp_send_floor(&mut self, floor: u64) {
        self.rtcp_send_floor = self.rtcp_send_floor.max(floor.clamp(1, SRTCP_INDEX_MAX));
    }

    /// Restores one stream from a checkpoint taken by [`SrtpContext::checkpoints`] (replacing
    /// any state the context has for that SSRC).
    pub fn restore(&mut self, cp: &StreamCheckpoint) {
        let streams = match cp.kind {
            StreamKind::Rtp => &mut self.rtp,
            StreamKind::Rtcp => &mut self.rtcp,
        };
        // A damaged checkpoint cannot take a stream past its index space (48 bits for SRTP,
        // 31 for SRTCP): the stream then fails authentication, it does not misbehave.
        let max = match cp.kind {
            StreamKind::Rtp => SRTP_INDEX_MAX,
            StreamKind::Rtcp => SRTCP_INDEX_MAX,
        };
        let highest = cp.highest_index.min(max);
        let slot = streams.slot(cp.ssrc);
        let w = &mut streams.list[slot].window;
        w.started = true;
        w.highest = highest;
        w.bits = cp.window;
        if cp.kind == StreamKind::Rtcp {
            self.raise_srtcp_send_floor(highest.saturating_add(1));
        }
    }
}

/// How a leg carries media: in clear or under an SRTP context.
#[derive(Debug, Clone)]
pub enum LegCrypto {
    /// Plain RTP/RTCP (the inside leg to a non-secure phone).
    Plain,
    /// SRTP/SRTCP with this context.
    Srtp(SrtpContext),
}

/// Moves the RTP or SRTP packet in `buf[..len]` from the `inbound` leg's protection to the
/// `outbound` leg's, in place: SRTP to SRTP, SRTP to RTP or RTP to SRTP. Returns the new
/// length. The inbound replay window only advances when the packet authenticates.
#[inline]
pub fn rekey_rtp(
    inbound: &mut LegCrypto,
    outbound: &mut LegCrypto,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, Error> {
    if let (LegCrypto::Srtp(inb), LegCrypto::Srtp(out)) = (&mut *inbound, &mut *outbound) {
        if inb.profile.is_aead() == out.profile.is_aead() {
            return rekey_rtp_one_pass(inb, out, buf, len);
        }
    }
    let len = match inbound {
        LegCrypto::Plain => {
            let pkt = buf.get(..len).ok_or(Error::BufferTooSmall {
                needed: len,
                cap: buf.len(),
            })?;
            rtp::header_len(pkt)?;
            len
        }
        LegCrypto::Srtp(ctx) => ctx.unprotect_rtp(buf, len)?,
    };
    match outbound {
        LegCrypto::Plain => Ok(len),
        LegCrypto::Srtp(ctx) => ctx.protect_rtp(buf, len),
    }
}

/// The largest payload the one-pass counter-mode re-key takes (its keystream lives on the
/// stack); larger packets take unprotect then protect.
const CM_ONE_PASS_MAX_PAYLOAD: usize = 2048;
/// The largest payload the one-pass GCM re-key takes (12 blocks: G.711/G.722 at 20 ms, Opus
/// voice). Measured on an AMD EPYC (Zen 4) core, whole re-key of a 172-byte packet: ~150 ns one
/// pass against ~170 ns for ring's two calls, whose fixed cost dominates small packets; the
/// two cross near 200 bytes of payload, above which ring's VAES/VPCLMULQDQ assembly (two
/// blocks per instruction, AVX2) wins even making two passes.
pub(crate) const GCM_ONE_PASS_MAX_PAYLOAD: usize = 192;

/// Re-key between two legs of the same kind (counter mode to counter mode, or GCM to GCM) in
/// one pass over the packet: the payload is XORed with both keystreams at once and the
/// inbound and outbound authentication chains run side by side ([`HmacSha1::tag_pair`],
/// [`GcmPassKey::tag_pair`]). Same checks and state rules as unprotect then protect, to the
/// byte: nothing in either context changes unless the inbound tag verifies. On an error the
/// buffer's payload is unspecified (the caller drops the packet either way).
fn rekey_rtp_one_pass(
    inb: &mut SrtpContext,
    out: &mut SrtpContext,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, Error> {
    let aead = inb.profile.is_aead();
    let max_payload = if aead {
        GCM_ONE_PASS_MAX_PAYLOAD
    } else {
        CM_ONE_PASS_MAX_PAYLOAD
    };
    let Some(plan) = OnePassPlan::new(inb, out, buf, len, max_payload)? else {
        let n = inb.unprotect_rtp(buf, len)?;
        return out.protect_rtp(buf, n);
    };
    let OnePassPlan {
        hdr,
        plain_len,
        ssrc,
        index_in,
        index_out,
        ..
    } = plan;
    let tag_in = inb.profile.rtp_tag_len();
    // Counter mode: header | payload | MKI | tag.  GCM: header | payload | tag | MKI.
    let (mki_at, tag_at) = if aead {
        (plain_len + tag_in, plain_len)
    } else {
        (plain_len, plain_len + inb.mki_len)
    };
    let key_in = inb.key_index_for_mki(&buf[mki_at..mki_at + inb.mki_len])?;
    // Mutable: the GCM pass keeps its GHASH state in the keys rather than copying it out.
    let keys_in = &mut inb.keys[key_in].1;
    let keys_out = &mut out.keys[0].1;
    let packet = &mut buf[..plain_len];
    let (expected, tag_out): ([u8; 20], [u8; 20]) = match (keys_in, keys_out) {
        (
            SessionKeys::Cm {
                rtp_cipher: c_in,
                rtp_auth: a_in,
                rtp_salt: s_in,
                ..
            },
            SessionKeys::Cm {
                rtp_cipher: c_out,
                rtp_auth: a_out,
                rtp_salt: s_out,
                ..
            },
        ) => {
            let (enc_in, enc_out) = (inb.encrypt_rtp, out.encrypt_rtp);
            let roc_in = ((index_in >> 16) as u32).to_be_bytes();
            let roc_out = ((index_out >> 16) as u32).to_be_bytes();
            let payload = plain_len - hdr;
            let mut run = |ks: &mut [u8]| {
                if enc_in {
                    c_in.apply_keystream(&cm_iv(s_in, ssrc, index_in), ks);
                }
                if enc_out {
                    c_out.apply_keystream(&cm_iv(s_out, ssrc, index_out), ks);
                }
                a_in.tag_pair(a_out, packet, hdr, ks, &roc_in, &roc_out)
            };
            if payload <= 256 {
                run(&mut [0u8; 256][..payload])
            } else {
                run(&mut [0u8; CM_ONE_PASS_MAX_PAYLOAD][..payload])
            }
        }
        (
            SessionKeys::Gcm {
                rtp_pass: k_in,
                rtp_salt: s_in,
                ..
            },
            SessionKeys::Gcm {
                rtp_pass: k_out,
                rtp_salt: s_out,
                ..
            },
        ) => {
            let iv = |salt, index: u64| gcm_iv(salt, ssrc, (index >> 32) as u32, index as u32);
            let (a, b) = k_in.tag_pair(
                k_out,
                &iv(s_in, index_in),
                &iv(s_out, index_out),
                packet,
                hdr,
            );
            let widen = |t: [u8; 16]| {
                let mut w = [0u8; 20];
                w[..16].copy_from_slice(&t);
                w
            };
            (widen(a), widen(b))
        }
        _ => unreachable!("one-pass re-key joins legs of the same kind"),
    };
    // The pass leaves the trailer alone: the packet's tag is still in place.
    if !crypto::tags_match(&expected[..tag_in], &buf[tag_at..tag_at + tag_in]) {
        return Err(Error::AuthFailed);
    }
    Ok(plan.commit(inb, out, buf, &tag_out))
}

/// A one-pass re-key once the packet's layout and its index on both legs are known and
/// checked, before anything is decrypted.
struct OnePassPlan {
    hdr: usize,
    plain_len: usize,
    out_len: usize,
    ssrc: u32,
    existing_in: Option<usize>,
    index_in: u64,
    index_out: u64,
}

impl OnePassPlan {
    /// The checks unprotect and protect would make, in their order. `None`: the payload is
    /// above `max_payload`, take the two-pass road.
    #[inline]
    fn new(
        inb: &SrtpContext,
        out: &SrtpContext,
        buf: &[u8],
        len: usize,
        max_payload: usize,
    ) -> Result<Option<Self>, Error> {
        let (hdr, plain_len) = inb.arriving_layout(buf, len)?;
        let out_len = plain_len + out.mki_len + out.profile.rtp_tag_len();
        if out_len > buf.len() {
            return Err(Error::BufferTooSmall {
                needed: out_len,
                cap: buf.len(),
            });
        }
        if plain_len - hdr > max_payload {
            return Ok(None);
        }
        let ssrc = read_u32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let (existing_in, index_in) = inb.arriving_index(ssrc, seq)?;
        let index_out = match out.rtp.find(ssrc) {
            Some(i) => {
                let w = &out.rtp.list[i].window;
                let index = estimate_index(w, seq)?;
                if !out.allow_repeat_tx {
                    w.check(index, out.window)?;
                }
                index
            }
            None => u64::from(seq),
        };
        Ok(Some(OnePassPlan {
            hdr,
            plain_len,
            out_len,
            ssrc,
            existing_in,
            index_in,
            index_out,
        }))
    }

    /// After the inbound tag verified: advance both replay windows and write the outbound
    /// trailer (`tag` holds at least the outbound tag length). Returns the outbound length.
    #[inline]
    fn commit(
        self,
        inb: &mut SrtpContext,
        out: &mut SrtpContext,
        buf: &mut [u8],
        tag: &[u8],
    ) -> usize {
        let slot = match self.existing_in {
            Some(i) => {
                inb.rtp.tick += 1;
                inb.rtp.list[i].last_used = inb.rtp.tick;
                i
            }
            None => inb.rtp.slot(self.ssrc),
        };
        inb.rtp.list[slot].window.accept(self.index_in);
        let slot = out.rtp.slot(self.ssrc);
        out.rtp.list[slot].window.accept(self.index_out);
        let (tag_len, plain_len) = (out.profile.rtp_tag_len(), self.plain_len);
        let mki = out.keys[0].0.mki();
        if out.profile.is_aead() {
            buf[plain_len..plain_len + tag_len].copy_from_slice(&tag[..tag_len]);
            buf[plain_len + tag_len..self.out_len].copy_from_slice(mki);
        } else {
            buf[plain_len..plain_len + out.mki_len].copy_from_slice(mki);
            buf[plain_len + out.mki_len..self.out_len].copy_from_slice(&tag[..tag_len]);
        }
        self.out_len
    }
}

/// [`rekey_rtp`] for RTCP/SRTCP.
#[inline]
pub fn rekey_rtcp(
    inbound: &mut LegCrypto,
    outbound: &mut LegCrypto,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, Error> {
    let len = match inbound {
        LegCrypto::Plain => {
            let pkt = buf.get(..len).ok_or(Error::BufferTooSmall {
                needed: len,
                cap: buf.len(),
            })?;
            rtcp::check_first_header(pkt)?;
            len
        }
        LegCrypto::Srtp(ctx) => ctx.unprotect_rtcp(buf, len)?,
    };
    match outbound {
        LegCrypto::Plain => Ok(len),
        LegCrypto::Srtp(ctx) => ctx.protect_rtcp(buf, len),
    }
}
