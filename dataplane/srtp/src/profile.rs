//! The protection profiles (crypto suites) edgeway speaks.

use core::fmt;

/// An SRTP protection profile, named as in SDES `a=crypto` lines (RFC 4568, 6188, 7714).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SrtpProfile {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 3711).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (80-bit on SRTCP).
    AesCm128HmacSha1_32,
    /// AES-256 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 6188).
    AesCm256HmacSha1_80,
    /// AES-256 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (80-bit on SRTCP) (RFC 6188).
    AesCm256HmacSha1_32,
    /// AES-128 in Galois/counter mode, 128-bit tag (RFC 7714).
    AeadAes128Gcm,
    /// AES-256 in Galois/counter mode, 128-bit tag (RFC 7714).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// Every profile, strongest first: the order in which edgeway offers them.
    pub const ALL: [SrtpProfile; 6] = [
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AesCm256HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm256HmacSha1_32,
        SrtpProfile::AesCm128HmacSha1_32,
    ];

    /// The name used in SDES `a=crypto` attributes.
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpProfile::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            SrtpProfile::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Looks a profile up by its SDES name (case-sensitive, as RFC 4568 registers them).
    /// `AES_CM_256_HMAC_SHA1_*`, a spelling some endpoints send, is accepted too.
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        Some(match name {
            "AES_CM_128_HMAC_SHA1_80" => SrtpProfile::AesCm128HmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => SrtpProfile::AesCm128HmacSha1_32,
            "AES_256_CM_HMAC_SHA1_80" | "AES_CM_256_HMAC_SHA1_80" => {
                SrtpProfile::AesCm256HmacSha1_80
            }
            "AES_256_CM_HMAC_SHA1_32" | "AES_CM_256_HMAC_SHA1_32" => {
                SrtpProfile::AesCm256HmacSha1_32
            }
            "AEAD_AES_128_GCM" => SrtpProfile::AeadAes128Gcm,
            "AEAD_AES_256_GCM" => SrtpProfile::AeadAes256Gcm,
            _ => return None,
        })
    }

    /// A stable small number for the profile (used by the flow table schema; 0 means plain RTP).
    pub fn id(self) -> u32 {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 1,
            SrtpProfile::AesCm128HmacSha1_32 => 2,
            SrtpProfile::AesCm256HmacSha1_80 => 3,
            SrtpProfile::AesCm256HmacSha1_32 => 4,
            SrtpProfile::AeadAes128Gcm => 5,
            SrtpProfile::AeadAes256Gcm => 6,
        }
    }

    /// The inverse of [`SrtpProfile::id`].
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            1 => SrtpProfile::AesCm128HmacSha1_80,
            2 => SrtpProfile::AesCm128HmacSha1_32,
            3 => SrtpProfile::AesCm256HmacSha1_80,
            4 => SrtpProfile::AesCm256HmacSha1_32,
            5 => SrtpProfile::AeadAes128Gcm,
            6 => SrtpProfile::AeadAes256Gcm,
            _ => return None,
        })
    }

    /// Whether the profile is an AEAD (GCM) profile.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm
        )
    }

    /// Master (and session) encryption key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80
            | SrtpProfile::AesCm128HmacSha1_32
            | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::AesCm256HmacSha1_80
            | SrtpProfile::AesCm256HmacSha1_32
            | SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    /// Master (and session) salt length in bytes: 112 bits for counter mode, 96 for GCM.
    pub fn master_salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Authentication tag length on SRTP packets.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 | SrtpProfile::AesCm256HmacSha1_80 => 10,
            SrtpProfile::AesCm128HmacSha1_32 | SrtpProfile::AesCm256HmacSha1_32 => 4,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 16,
        }
    }

    /// Authentication tag length on SRTCP packets (always 80 bits for the HMAC profiles).
    pub fn rtcp_tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}
