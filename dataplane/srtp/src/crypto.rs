//! The primitives under the profiles: AES counter mode (keystream and the RFC 3711 §4.3 key
//! derivation PRF), pre-keyed HMAC-SHA1, and AES-GCM.
//!
//! Counter-mode SRTP runs the keystream and the HMAC of one packet interleaved
//! ([`encrypt_then_tag`], [`verify_then_decrypt`]): SHA-1 with SHA-NI is bound by the latency
//! of its round instructions (~115 cycles a block, ~0.6 µs for 1200 bytes), and AES-CTR issued
//! between its calls runs in that shadow, where one pass after the other paid for both.
//!
//! Backend choice (measured, see perf-lab/srtp): RustCrypto `aes` (AES-NI) for counter mode and
//! `sha1` (SHA-NI) for HMAC; `ring` for GCM protect and unprotect, whose stitched VAES assembly
//! wins on one pass over one key. A GCM re-key of a small packet is the exception
//! ([`GcmPassKey::tag_pair`]): ring's call costs ~65 ns for 160 bytes, most of it fixed, and a
//! re-key makes two, so there both keystreams come from `aes` and both GHASH chains from
//! `polyval` (PCLMULQDQ, four-block aggregated reduction), one pass over the packet: ~110 ns
//! for both directions at 160 bytes, of which AES ~28 and GHASH ~48 (measured on a Zen 4
//! core). Both crates pick their instructions at run time; nothing assumes the build
//! machine's CPU.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use polyval::{universal_hash::UniversalHash, Polyval};
use ring::aead;

/// One AES block as the `aes` crate takes it.
type AesBlock = GenericArray<u8, aes::cipher::consts::U16>;

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

    /// Encrypts `blocks` in place, eight at a time where there are eight.
    #[inline]
    fn encrypt_blocks(&self, blocks: &mut [AesBlock]) {
        match self {
            AesCtr::A128(c) => c.encrypt_blocks(blocks),
            AesCtr::A256(c) => c.encrypt_blocks(blocks),
        }
    }

    /// XORs `data` with the keystream that starts at counter block `iv`.
    #[inline]
    pub(crate) fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut ctr = u128::from_be_bytes(*iv);
        let mut ks = [AesBlock::default(); PAR_BLOCKS];
        for chunk in data.chunks_mut(16 * PAR_BLOCKS) {
            self.xor_batch(&mut ctr, &mut ks, chunk);
        }
    }

    /// XORs `chunk` (at most [`PAR_BLOCKS`] blocks) with the keystream from counter block
    /// `ctr`, which it advances past the blocks used.
    #[inline]
    fn xor_batch(&self, ctr: &mut u128, ks: &mut [AesBlock; PAR_BLOCKS], chunk: &mut [u8]) {
        let nblocks = chunk.len().div_ceil(16);
        let batch = batch_len(nblocks);
        for b in ks.iter_mut().take(batch) {
            *b = GenericArray::from(ctr.to_be_bytes());
            *ctr = ctr.wrapping_add(1);
        }
        // Blocks computed past the chunk (a padded batch) are never used: step back.
        *ctr = ctr.wrapping_sub((batch - nblocks) as u128);
        self.encrypt_blocks(&mut ks[..batch]);
        xor_keystream(chunk, ks);
    }
}

/// How many keystream blocks to compute for `nblocks` (at most [`PAR_BLOCKS`]): `aes` runs
/// eight blocks side by side but fewer one at a time, so from four blocks on a whole batch
/// is cheaper (as in the GCM pass).
#[inline]
fn batch_len(nblocks: usize) -> usize {
    if nblocks >= PAR_BLOCKS / 2 {
        PAR_BLOCKS
    } else {
        nblocks
    }
}

/// XORs `data` with `keystream` from its first block on, 16 bytes at a time as one u128;
/// only a last partial block goes bytewise.
#[inline]
fn xor_keystream(data: &mut [u8], keystream: &[AesBlock]) {
    let whole = data.len() / 16;
    let mut blocks = data.chunks_exact_mut(16);
    for (d, k) in blocks.by_ref().zip(keystream) {
        let x = u128::from_ne_bytes(d.try_into().unwrap_or_else(|_| unreachable!()))
            ^ u128::from_ne_bytes(k.as_slice().try_into().unwrap_or_else(|_| unreachable!()));
        d.copy_from_slice(&x.to_ne_bytes());
    }
    let tail = blocks.into_remainder();
    if let Some(k) = keystream.get(whole) {
        for (x, y) in tail.iter_mut().zip(k.iter()) {
            *x ^= y;
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

/// SHA-1 compressions of `blocks`, whole 64-byte blocks, in one call: the SHA-NI loop then
/// keeps the state in registers from block to block, where a call per block sends it through
/// memory on the hash's critical path (measured: ~10 % of a 1200-byte HMAC).
#[inline]
fn sha1_blocks(state: &mut [u32; 5], blocks: &[u8]) {
    let (blocks, rest) = blocks.as_chunks::<64>();
    debug_assert!(rest.is_empty(), "whole SHA-1 blocks only");
    if !blocks.is_empty() {
        sha1::block_api::compress(state, blocks);
    }
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
        sha1_blocks(&mut inner, &ipad);
        sha1_blocks(&mut outer, &opad);
        HmacSha1 { inner, outer }
    }

    /// HMAC-SHA1 of `data || trailer` (the trailer is SRTP's ROC, or empty).
    #[inline]
    pub(crate) fn tag(&self, data: &[u8], trailer: &[u8]) -> [u8; 20] {
        let mut state = self.inner;
        let full = data.len() / 64 * 64;
        sha1_blocks(&mut state, &data[..full]);
        self.finish_tail(state, &data[full..], trailer, data.len())
    }

    /// Completes an inner hash whose whole blocks are in `state`: hashes the `rest` of the
    /// data (under 64 bytes), the `trailer` and the padding, then the outer hash.
    #[inline]
    fn finish_tail(
        &self,
        mut state: [u32; 5],
        rest: &[u8],
        trailer: &[u8],
        data_len: usize,
    ) -> [u8; 20] {
        let mut tail = [0u8; 128];
        let blocks = tail_blocks(&mut tail, rest, trailer, data_len);
        sha1_blocks(&mut state, &tail[..blocks * 64]);
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
        sha1_blocks(&mut state, &block);
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
            sha1_blocks(&mut a, &packet[pos..pos + 64]);
            xor_from(packet, pos, pos + 64, start, xor);
            sha1_blocks(&mut b, &packet[pos..pos + 64]);
            pos += 64;
        }
        let mut tail_a = [0u8; 128];
        let blocks = tail_blocks(&mut tail_a, &packet[full..], trailer_in, len);
        xor_from(packet, full, len, start, xor);
        let mut tail_b = [0u8; 128];
        tail_blocks(&mut tail_b, &packet[full..], trailer_out, len);
        for i in 0..blocks {
            sha1_blocks(&mut a, &tail_a[i * 64..i * 64 + 64]);
            sha1_blocks(&mut b, &tail_b[i * 64..i * 64 + 64]);
        }
        (self.finish(a), out.finish(b))
    }

    /// Whether the truncated `tag` matches, compared in constant time.
    #[inline]
    pub(crate) fn verify(&self, data: &[u8], trailer: &[u8], tag: &[u8]) -> bool {
        truncated_tag_matches(&self.tag(data, trailer), tag)
    }
}

/// Keystream blocks [`verify_then_decrypt`] computes while the tag is checked: a packet of
/// up to 1536 bytes of payload (an Ethernet MTU); the keystream of any payload beyond comes
/// after the check.
const VERIFY_KEYSTREAM_BLOCKS: usize = 96;
/// Payloads of up to this many blocks (256 bytes: voice) are verified, then decrypted, one
/// after the other: with so little to overlap, zeroing the keystream buffer costs more than
/// the interleaving saves (measured), and the branch predictor already runs the AES of the
/// (predicted) match in the tag's shadow.
const SMALL_PAYLOAD_BLOCKS: usize = 16;

/// Counter-mode SRTP/SRTCP protect in one interleaved pass: XORs `packet[start..]` with the
/// keystream from counter block `iv` (when there is a `cipher`: a null cipher leaves it
/// clear) and returns the HMAC of the result followed by `trailer`.
///
/// SHA-1 is bound by the latency of its round instructions, AES-CTR by throughput, and the
/// two are independent except where the hash reads ciphertext. So each 8-block AES batch is
/// followed by the hash of the whole blocks that the batches before it finished: the two sit
/// side by side in the instruction stream and the out-of-order core runs the AES in the
/// hash's latency shadow (measured: ~15 % off a 1200-byte packet against encrypt-then-hash).
#[inline]
pub(crate) fn encrypt_then_tag(
    cipher: Option<&AesCtr>,
    auth: &HmacSha1,
    iv: &[u8; 16],
    packet: &mut [u8],
    start: usize,
    trailer: &[u8],
) -> [u8; 20] {
    let Some(cipher) = cipher else {
        return auth.tag(packet, trailer);
    };
    let mut state = auth.inner;
    let mut ctr = u128::from_be_bytes(*iv);
    let mut ks = [AesBlock::default(); PAR_BLOCKS];
    // `packet[..hashed]` is in the hash; `packet[..ready]` is final (clear header, ciphertext).
    let (mut hashed, mut ready) = (0, start);
    let mut from = start;
    while from < packet.len() {
        let to = (from + 16 * PAR_BLOCKS).min(packet.len());
        cipher.xor_batch(&mut ctr, &mut ks, &mut packet[from..to]);
        // The batch first, then the hash call: the other order measured ~15 % slower.
        let upto = ready / 64 * 64;
        sha1_blocks(&mut state, &packet[hashed..upto]);
        hashed = upto;
        ready = to;
        from = to;
    }
    let full = packet.len() / 64 * 64;
    sha1_blocks(&mut state, &packet[hashed..full]);
    auth.finish_tail(state, &packet[full..], trailer, packet.len())
}

/// Counter-mode SRTP/SRTCP unprotect in one interleaved pass: checks the truncated `tag`
/// against the HMAC of `packet` followed by `trailer` and, only when it matches, XORs
/// `packet[start..]` with the keystream from counter block `iv` (when there is a `cipher`).
/// Returns whether the tag matched; on a mismatch `packet` is untouched.
///
/// The keystream does not depend on the packet, so it is computed into a stack buffer while
/// the tag is: two hash blocks, then an 8-block AES batch, in turn (see [`encrypt_then_tag`]
/// for why), and applied once the tag has matched.
#[inline]
pub(crate) fn verify_then_decrypt(
    cipher: Option<&AesCtr>,
    auth: &HmacSha1,
    iv: &[u8; 16],
    packet: &mut [u8],
    start: usize,
    trailer: &[u8],
    tag: &[u8],
) -> bool {
    let Some(cipher) = cipher else {
        return auth.verify(packet, trailer, tag);
    };
    let payload_blocks = packet.len().saturating_sub(start).div_ceil(16);
    if payload_blocks <= SMALL_PAYLOAD_BLOCKS {
        if !auth.verify(packet, trailer, tag) {
            return false;
        }
        cipher.apply_keystream(iv, &mut packet[start..]);
        true
    } else {
        let mut ks = [AesBlock::default(); VERIFY_KEYSTREAM_BLOCKS];
        verify_then_decrypt_with(cipher, auth, iv, packet, start, trailer, tag, &mut ks)
    }
}

/// [`verify_then_decrypt`] with `ks` for the keystream computed while the tag is.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn verify_then_decrypt_with(
    cipher: &AesCtr,
    auth: &HmacSha1,
    iv: &[u8; 16],
    packet: &mut [u8],
    start: usize,
    trailer: &[u8],
    tag: &[u8],
    ks: &mut [AesBlock],
) -> bool {
    let payload_blocks = packet.len().saturating_sub(start).div_ceil(16);
    let early = payload_blocks.min(ks.len());
    let mut state = auth.inner;
    let full = packet.len() / 64 * 64;
    let mut hashed = 0;
    let mut ctr = u128::from_be_bytes(*iv);
    let mut computed = 0;
    while computed < early {
        let batch = batch_len(early - computed).min(ks.len() - computed);
        for b in ks[computed..computed + batch].iter_mut() {
            *b = GenericArray::from(ctr.to_be_bytes());
            ctr = ctr.wrapping_add(1);
        }
        cipher.encrypt_blocks(&mut ks[computed..computed + batch]);
        computed += batch;
        let upto = (hashed + 128).min(full);
        sha1_blocks(&mut state, &packet[hashed..upto]);
        hashed = upto;
    }
    sha1_blocks(&mut state, &packet[hashed..full]);
    let full_tag = auth.finish_tail(state, &packet[full..], trailer, packet.len());
    if !truncated_tag_matches(&full_tag, tag) {
        return false;
    }
    let payload = &mut packet[start..];
    let (now, later) = payload.split_at_mut((early * 16).min(payload.len()));
    xor_keystream(now, &ks[..early]);
    if !later.is_empty() {
        let next = u128::from_be_bytes(*iv).wrapping_add(early as u128);
        cipher.apply_keystream(&next.to_be_bytes(), later);
    }
    true
}

/// Whether `tag` is a non-empty truncation of the HMAC `full`, compared in constant time.
#[inline]
fn truncated_tag_matches(full: &[u8; 20], tag: &[u8]) -> bool {
    !tag.is_empty() && tag.len() <= 20 && tags_match(&full[..tag.len()], tag)
}

/// Whether two tags of the same length are equal, compared in constant time.
#[inline]
pub(crate) fn tags_match(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0 && a.len() == b.len()
}

/// Payload blocks whose keystream one batch of the GCM pass computes per key (plus the tag
/// mask block in the first batch): a G.711 or G.722 20 ms payload (10 blocks) in one batch.
const GCM_PASS_BATCH: usize = 12;
/// Keystream blocks per key per batch: a batch, its mask block, rounded up to eight.
const GCM_PASS_KEYSTREAM: usize = (GCM_PASS_BATCH + 1).next_multiple_of(8);
/// Blocks handed to POLYVAL per call: a multiple of four, so its aggregated-reduction path
/// (one reduction per four blocks) does the work instead of the one-block chain.
const GHASH_RUN: usize = 16;

/// AES-GCM key material for the one-pass re-key: the AES key schedule and the POLYVAL key
/// that computes this key's GHASH (RFC 8452 appendix A).
#[derive(Clone)]
pub(crate) struct GcmPassKey {
    cipher: AesCtr,
    ghash: Polyval,
}

impl GcmPassKey {
    /// `key` must be 16 or 32 bytes (checked by the caller's profile).
    pub(crate) fn new(key: &[u8]) -> Self {
        let cipher = AesCtr::new(key);
        let mut h = [AesBlock::default()];
        cipher.encrypt_blocks(&mut h);
        // GHASH under H is POLYVAL under mulX(ByteReverse(H)) of the byte-reversed blocks; a
        // GHASH block read big-endian is its byte reversal read little-endian.
        let h = u128::from_be_bytes(h[0].into());
        let carry = h >> 127;
        let polyval_h = (h << 1) ^ (carry * ((1 << 127) | (1 << 126) | (1 << 121) | 1));
        GcmPassKey {
            cipher,
            ghash: Polyval::new(&polyval_h.to_le_bytes().into()),
        }
    }

    /// Re-keys AES-GCM SRTP in one pass. `packet` is the associated data (`packet[..start]`,
    /// the RTP header) followed by the payload encrypted under `self` with the 12-byte IV
    /// `iv_in`; on return the payload is encrypted under `out` with `iv_out`. Returns (the tag
    /// `self` computes for the packet as it arrived, the tag `out` gives the packet as it
    /// leaves); the caller compares the first with the packet's own tag.
    ///
    /// The payload is XORed with both keystreams at once, and the two GHASH chains are fed
    /// side by side in runs of [`GHASH_RUN`] blocks, as [`HmacSha1::tag_pair`] does for
    /// counter mode. The counter is GCM's inc32 of the last word, as in RFC 7714 §8.1.
    pub(crate) fn tag_pair(
        &mut self,
        out: &mut GcmPassKey,
        iv_in: &[u8; 12],
        iv_out: &[u8; 12],
        packet: &mut [u8],
        start: usize,
    ) -> ([u8; 16], [u8; 16]) {
        let (aad, payload) = packet.split_at_mut(start);
        // GHASH from a zero state ignores leading zero blocks: start the runs with enough of
        // them that every POLYVAL call takes a multiple of four blocks, never the slow
        // one-block path.
        let blocks_hashed = aad.len().div_ceil(16) + payload.len().div_ceil(16) + 1;
        let mut hash = GhashPair {
            states: [&mut self.ghash, &mut out.ghash],
            runs: Default::default(),
            len: blocks_hashed.wrapping_neg() % 4,
        };
        for chunk in aad.chunks(16) {
            let block = padded_block(chunk);
            hash.push(block, block);
        }
        let (base_in, base_out) = (counter_base(iv_in), counter_base(iv_out));
        // Counter 1 (J0) masks the tag; the payload's keystream starts at 2.
        let mut masks = None;
        let mut counter = 2u32;
        let mut ks_in = [AesBlock::default(); GCM_PASS_KEYSTREAM];
        let mut ks_out = [AesBlock::default(); GCM_PASS_KEYSTREAM];
        for chunk in payload.chunks_mut(16 * GCM_PASS_BATCH) {
            let blocks = chunk.len().div_ceil(16);
            for (i, (a, b)) in ks_in
                .iter_mut()
                .zip(ks_out.iter_mut())
                .take(blocks)
                .enumerate()
            {
                let c = u128::from(counter.wrapping_add(i as u32));
                *a = (base_in | c).to_be_bytes().into();
                *b = (base_out | c).to_be_bytes().into();
            }
            counter = counter.wrapping_add(blocks as u32);
            // The mask rides in the first batch, after the payload blocks, so the eight-block
            // path still starts at the first payload block.
            let with_mask = blocks + usize::from(masks.is_none());
            // Four or more blocks past a multiple of eight cost more one at a time than as
            // one more eight-block batch (whose extra keystream is never used).
            let with_mask = if with_mask % 8 >= 4 {
                with_mask.next_multiple_of(8)
            } else {
                with_mask
            };
            if masks.is_none() {
                ks_in[blocks] = (base_in | 1).to_be_bytes().into();
                ks_out[blocks] = (base_out | 1).to_be_bytes().into();
            }
            self.cipher.encrypt_blocks(&mut ks_in[..with_mask]);
            out.cipher.encrypt_blocks(&mut ks_out[..with_mask]);
            if masks.is_none() {
                masks = Some((ks_in[blocks], ks_out[blocks]));
            }
            let mut full = chunk.chunks_exact_mut(16);
            for (block, (a, b)) in full.by_ref().zip(ks_in.iter().zip(&ks_out)) {
                let arrived =
                    u128::from_be_bytes((&*block).try_into().unwrap_or_else(|_| unreachable!()));
                let leaves =
                    arrived ^ u128::from_be_bytes((*a).into()) ^ u128::from_be_bytes((*b).into());
                block.copy_from_slice(&leaves.to_be_bytes());
                hash.push(arrived, leaves);
            }
            let tail = full.into_remainder();
            if !tail.is_empty() {
                let (a, b) = (ks_in[blocks - 1], ks_out[blocks - 1]);
                let arrived = padded_block(tail);
                let keystream = u128::from_be_bytes(a.into()) ^ u128::from_be_bytes(b.into());
                // GHASH pads the last block with zeros: keep the keystream off the padding.
                let leaves = arrived ^ (keystream & !(u128::MAX >> (8 * tail.len())));
                for (x, y) in tail.iter_mut().zip(leaves.to_be_bytes()) {
                    *x = y;
                }
                hash.push(arrived, leaves);
            }
        }
        let (mask_in, mask_out) = masks.unwrap_or_else(|| {
            let mut j0 = [
                (base_in | 1).to_be_bytes().into(),
                (base_out | 1).to_be_bytes().into(),
            ];
            self.cipher.encrypt_blocks(&mut j0[..1]);
            out.cipher.encrypt_blocks(&mut j0[1..]);
            (j0[0], j0[1])
        });
        let lengths = (((start as u128) * 8) << 64) | ((payload.len() as u128) * 8);
        hash.push(lengths, lengths);
        let (hash_in, hash_out) = hash.finish();
        let tag_in = hash_in ^ u128::from_be_bytes(mask_in.into());
        let tag_out = hash_out ^ u128::from_be_bytes(mask_out.into());
        (tag_in.to_be_bytes(), tag_out.to_be_bytes())
    }
}

/// The GCM counter block `iv || 0`, read big-endian: block `n` is `base | n`.
#[inline]
fn counter_base(iv: &[u8; 12]) -> u128 {
    let mut b = [0u8; 16];
    b[..12].copy_from_slice(iv);
    u128::from_be_bytes(b)
}

/// Up to 16 bytes, zero-padded, read as one big-endian GHASH block. Built in a register: a
/// byte-wise copy into a stack block followed by a 16-byte load stalls store forwarding.
#[inline]
fn padded_block(bytes: &[u8]) -> u128 {
    if let Ok(full) = <[u8; 16]>::try_from(bytes) {
        return u128::from_be_bytes(full);
    }
    // A word at a time: RTP headers, the usual short block, are whole 32-bit words.
    let (mut block, mut shift) = (0u128, 128u32);
    let mut words = bytes.chunks_exact(4);
    for word in words.by_ref().take(3) {
        shift -= 32;
        let word = u32::from_be_bytes(word.try_into().unwrap_or_else(|_| unreachable!()));
        block |= u128::from(word) << shift;
    }
    for byte in words.remainder().iter().take(3) {
        shift -= 8;
        block |= u128::from(*byte) << shift;
    }
    block
}

/// Two GHASH computations fed side by side, a block each at a time, and handed to POLYVAL in
/// runs: one call per chain per run, since each call has a fixed cost (measured: slower when
/// the chains alternate four blocks at a time). The POLYVAL states are the keys' own, reset
/// after each packet, so no per-packet copy of the expanded key is made.
struct GhashPair<'k> {
    states: [&'k mut Polyval; 2],
    runs: [[polyval::Block; GHASH_RUN]; 2],
    len: usize,
}

impl GhashPair<'_> {
    /// Appends one GHASH block (read big-endian) to each chain; POLYVAL takes them
    /// byte-reversed.
    #[inline]
    fn push(&mut self, a: u128, b: u128) {
        let [run_a, run_b] = &mut self.runs;
        if let (Some(x), Some(y)) = (run_a.get_mut(self.len), run_b.get_mut(self.len)) {
            *x = a.to_le_bytes().into();
            *y = b.to_le_bytes().into();
            self.len += 1;
        }
        if self.len == GHASH_RUN {
            self.flush();
        }
    }

    #[inline]
    fn flush(&mut self) {
        let [run_a, run_b] = &self.runs;
        let [state_a, state_b] = &mut self.states;
        state_a.update(&run_a[..self.len]);
        state_b.update(&run_b[..self.len]);
        self.len = 0;
    }

    /// Both GHASH values, read big-endian; both states are back at zero for the next packet.
    #[inline]
    fn finish(mut self) -> (u128, u128) {
        self.flush();
        let [a, b] = self.states;
        (
            u128::from_le_bytes(a.finalize_reset().into()),
            u128::from_le_bytes(b.finalize_reset().into()),
        )
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
    /// ring's HMAC-SHA1.
    #[test]
    fn hmac_sha1_matches_rfc2202_and_ring() {
        let t1 = HmacSha1::new(&[0x0b; 20]).tag(b"Hi There", &[]);
        assert_eq!(t1.to_vec(), hex("b617318655057264e28bc0b6fb378c8ef146be00"));
        let t2 = HmacSha1::new(b"Jefe").tag(b"what do ya want ", b"for nothing?");
        assert_eq!(t2.to_vec(), hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
        let reference = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[7; 20]);
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        for len in 0..data.len() {
            for trailer in [&[][..], &[1, 2, 3, 4][..]] {
                let message = [&data[..len], trailer].concat();
                let want = ring::hmac::sign(&reference, &message);
                let want: [u8; 20] = want.as_ref().try_into().unwrap();
                let got = HmacSha1::new(&[7; 20]).tag(&data[..len], trailer);
                assert_eq!(got[..], want[..], "len {len}");
                assert!(HmacSha1::new(&[7; 20]).verify(&data[..len], trailer, &want[..10]));
                let mut bad = want;
                bad[3] ^= 1;
                assert!(!HmacSha1::new(&[7; 20]).verify(&data[..len], trailer, &bad[..4]));
            }
        }
    }

    /// The GCM pass against ring for every payload length up to 600 bytes (one batch and
    /// several, whole blocks and a partial tail), two AAD lengths and both key sizes: the
    /// inbound tag is ring's tag of the arriving packet, and the leaving packet and its tag
    /// are what ring seals from the plaintext under the outbound key.
    #[test]
    fn gcm_pass_matches_ring_open_then_seal() {
        let seal = |key: &[u8], iv: [u8; 12], aad: &[u8], data: &mut [u8]| -> [u8; 16] {
            let tag = gcm_key(key)
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(iv),
                    aead::Aad::from(aad),
                    data,
                )
                .unwrap();
            tag.as_ref().try_into().unwrap()
        };
        for key_len in [16usize, 32] {
            let key_in: Vec<u8> = (0..key_len as u8).collect();
            let key_out: Vec<u8> = (0..key_len as u8).map(|b| b ^ 0x5a).collect();
            let (iv_in, iv_out) = ([7u8; 12], [9u8; 12]);
            let mut pass_in = GcmPassKey::new(&key_in);
            let mut pass_out = GcmPassKey::new(&key_out);
            for aad_len in [12usize, 28] {
                for len in 0..=600usize {
                    let plain: Vec<u8> = (0..aad_len + len).map(|i| (i * 31 + len) as u8).collect();
                    let mut arriving = plain.clone();
                    let (aad, body) = arriving.split_at_mut(aad_len);
                    let tag_arriving = seal(&key_in, iv_in, aad, body);
                    let mut leaving = plain.clone();
                    let (aad, body) = leaving.split_at_mut(aad_len);
                    let tag_leaving = seal(&key_out, iv_out, aad, body);
                    let (tag_in, tag_out) =
                        pass_in.tag_pair(&mut pass_out, &iv_in, &iv_out, &mut arriving, aad_len);
                    let what = format!("key {key_len} aad {aad_len} payload {len}");
                    assert_eq!(tag_in, tag_arriving, "{what}");
                    assert_eq!(arriving, leaving, "{what}");
                    assert_eq!(tag_out, tag_leaving, "{what}");
                }
            }
        }
    }

    /// The interleaved passes against the plain ones (keystream, then HMAC; HMAC, then
    /// keystream) for every packet length up to 1700 bytes, past the early-keystream buffer,
    /// several header lengths, both key sizes and the null cipher; a forged tag leaves the
    /// packet as it arrived.
    #[test]
    fn interleaved_passes_match_keystream_and_hmac_apart() {
        let auth = HmacSha1::new(&[3; 20]);
        let iv: [u8; 16] = core::array::from_fn(|i| (i as u8) * 17);
        let trailer = [9, 8, 7, 6];
        for key_len in [16usize, 32] {
            let cipher = AesCtr::new(&vec![5u8; key_len]);
            for start in [8usize, 12, 28, 76] {
                for len in start..=1700 {
                    if key_len == 32 && len % 7 != 0 {
                        continue;
                    }
                    let plain: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
                    for use_cipher in [true, false] {
                        let c = use_cipher.then_some(&cipher);
                        let mut want = plain.clone();
                        if use_cipher {
                            cipher.apply_keystream(&iv, &mut want[start..]);
                        }
                        let want_tag = auth.tag(&want, &trailer);
                        let mut got = plain.clone();
                        let tag = encrypt_then_tag(c, &auth, &iv, &mut got, start, &trailer);
                        let what = format!("key {key_len} start {start} len {len} {use_cipher}");
                        assert_eq!(got, want, "{what}");
                        assert_eq!(tag, want_tag, "{what}");
                        let mut forged = tag;
                        forged[9] ^= 0x40;
                        assert!(
                            !verify_then_decrypt(
                                c,
                                &auth,
                                &iv,
                                &mut got,
                                start,
                                &trailer,
                                &forged[..10]
                            ),
                            "{what}"
                        );
                        assert_eq!(got, want, "forged tag left the packet alone: {what}");
                        assert!(
                            verify_then_decrypt(
                                c,
                                &auth,
                                &iv,
                                &mut got,
                                start,
                                &trailer,
                                &tag[..10]
                            ),
                            "{what}"
                        );
                        assert_eq!(got, plain, "{what}");
                    }
                }
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
