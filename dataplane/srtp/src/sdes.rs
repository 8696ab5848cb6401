//! SDES key material: RFC 4568 `a=crypto:` attributes (with the RFC 6188 and RFC 7714
//! suites), parsed, formatted, generated and turned into an [`SrtpConfig`].
//!
//! ```
//! use edgeway_srtp::sdes::CryptoAttribute;
//! let a: CryptoAttribute =
//!     "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
//!         .parse()
//!         .unwrap();
//! assert_eq!(a.tag, 1);
//! assert_eq!(a.keys[0].key.mki(), &[0, 0, 0, 1]);
//! ```

use core::fmt;
use core::str::FromStr;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};

use crate::{MasterKey, SrtpConfig, SrtpProfile, MAX_MKI_LEN};

/// Why an `a=crypto` attribute was refused. RFC 4568 §6.1: an offerer's attribute that cannot
/// be honoured is skipped, so every variant says precisely which part failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdesError {
    /// Fewer than three fields (tag, suite, key params).
    #[error("a=crypto needs a tag, a crypto-suite and key parameters")]
    MissingField,
    /// The tag is not a 1-9 digit decimal.
    #[error("bad a=crypto tag {0:?}")]
    BadTag(String),
    /// The suite is not one edgeway implements.
    #[error("unsupported crypto-suite {0:?}")]
    UnknownSuite(String),
    /// The key method is not `inline:`.
    #[error("key method must be inline:, got {0:?}")]
    BadKeyMethod(String),
    /// The key is not valid base64.
    #[error("key is not base64")]
    BadBase64,
    /// The decoded key and salt have the wrong length for the suite.
    #[error("{suite} needs {expected} bytes of key and salt, got {got}")]
    KeyLength {
        /// The suite's name.
        suite: &'static str,
        /// Bytes needed.
        expected: usize,
        /// Bytes decoded.
        got: usize,
    },
    /// The lifetime is not a decimal or `2^n` with n <= 48.
    #[error("bad key lifetime {0:?}")]
    BadLifetime(String),
    /// The MKI is not `value:length`, or the value does not fit the length.
    #[error("bad MKI {0:?}")]
    BadMki(String),
    /// MKI lengths above [`MAX_MKI_LEN`] bytes.
    #[error("MKI length {0} exceeds edgeway's maximum of 4 bytes")]
    MkiTooLong(u32),
    /// Several keys without MKIs, or MKIs of different lengths.
    #[error("several keys need MKIs of one length")]
    InconsistentMki,
    /// A session parameter edgeway does not implement (the line must be declined).
    #[error("unsupported session parameter {0:?}")]
    Unsupported(String),
    /// A session parameter RFC 4568 does not define (the line must be declined).
    #[error("unknown session parameter {0:?}")]
    UnknownParameter(String),
}

/// One `inline:` key parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// Master key, salt and MKI.
    pub key: MasterKey,
    /// Master key lifetime in packets, if given.
    pub lifetime: Option<u64>,
}

/// RFC 4568 §6.3 session parameters that edgeway honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionParams {
    /// `UNENCRYPTED_SRTP`.
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`.
    pub unencrypted_srtcp: bool,
    /// `WSH=`: the window size hint, used as the replay window.
    pub window_size_hint: Option<u32>,
}

/// An `a=crypto` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag that answers refer to.
    pub tag: u32,
    /// The crypto-suite.
    pub profile: SrtpProfile,
    /// One or more keys (several only with MKIs).
    pub keys: Vec<KeyParam>,
    /// Session parameters.
    pub params: SessionParams,
}

impl CryptoAttribute {
    /// A fresh attribute with a random key from `rng`, which must be a CSPRNG.
    pub fn generate<R: RngCore + CryptoRng>(tag: u32, profile: SrtpProfile, rng: &mut R) -> Self {
        let mut km = [0u8; 46];
        let (kl, sl) = (profile.master_key_len(), profile.master_salt_len());
        rng.fill_bytes(&mut km[..kl + sl]);
        let key = MasterKey::new(profile, &km[..kl], &km[kl..kl + sl])
            .unwrap_or_else(|_| unreachable!("lengths come from the profile"));
        km.fill(0);
        CryptoAttribute {
            tag,
            profile,
            keys: vec![KeyParam {
                key,
                lifetime: None,
            }],
            params: SessionParams::default(),
        }
    }

    /// The context configuration this attribute describes.
    pub fn to_config(&self) -> SrtpConfig {
        let mut cfg = SrtpConfig::new(self.profile, self.keys[0].key.clone());
        cfg.keys = self.keys.iter().map(|k| k.key.clone()).collect();
        cfg.encrypt_rtp = !self.params.unencrypted_srtp;
        cfg.encrypt_rtcp = !self.params.unencrypted_srtcp;
        if let Some(w) = self.params.window_size_hint {
            cfg.replay_window = w.clamp(64, crate::MAX_REPLAY_WINDOW);
        }
        cfg
    }
}

fn parse_lifetime(s: &str) -> Result<u64, SdesError> {
    let bad = || SdesError::BadLifetime(s.to_owned());
    if let Some(exp) = s.strip_prefix("2^") {
        let n: u32 = exp.parse().map_err(|_| bad())?;
        if n > 48 {
            return Err(bad());
        }
        Ok(1u64 << n)
    } else {
        s.parse::<u64>().ok().filter(|&v| v > 0).ok_or_else(bad)
    }
}

fn parse_key_param(profile: SrtpProfile, s: &str) -> Result<KeyParam, SdesError> {
    let Some(rest) = s.strip_prefix("inline:") else {
        return Err(SdesError::BadKeyMethod(
            s.split(':').next().unwrap_or("").to_owned(),
        ));
    };
    let mut parts = rest.split('|');
    let b64 = parts.next().unwrap_or("");
    let raw = STANDARD
        .decode(b64)
        .or_else(|_| STANDARD_NO_PAD.decode(b64))
        .map_err(|_| SdesError::BadBase64)?;
    let kl = profile.master_key_len();
    let expected = kl + profile.master_salt_len();
    if raw.len() != expected {
        return Err(SdesError::KeyLength {
            suite: profile.sdes_name(),
            expected,
            got: raw.len(),
        });
    }
    let mut key = MasterKey::new(profile, &raw[..kl], &raw[kl..])
        .unwrap_or_else(|_| unreachable!("lengths checked above"));
    let mut lifetime = None;
    for part in parts {
        if let Some((value, len)) = part.split_once(':') {
            let bad = || SdesError::BadMki(part.to_owned());
            let len: u32 = len.parse().map_err(|_| bad())?;
            let value: u64 = value.parse().map_err(|_| bad())?;
            if len == 0 || len > 128 {
                return Err(bad());
            }
            if len as usize > MAX_MKI_LEN {
                return Err(SdesError::MkiTooLong(len));
            }
            if len < 8 && value >> (8 * len) != 0 {
                return Err(bad());
            }
            let bytes = value.to_be_bytes();
            key = key
                .with_mki(&bytes[8 - len as usize..])
                .unwrap_or_else(|_| unreachable!("length checked above"));
        } else if lifetime.is_none() {
            lifetime = Some(parse_lifetime(part)?);
        } else {
            return Err(SdesError::BadLifetime(part.to_owned()));
        }
    }
    Ok(KeyParam { key, lifetime })
}

impl FromStr for CryptoAttribute {
    type Err = SdesError;

    /// Parses `a=crypto:...`, `crypto:...` or just the attribute value.
    fn from_str(s: &str) -> Result<Self, SdesError> {
        let s = s.trim();
        let s = s.strip_prefix("a=").unwrap_or(s);
        let s = s.strip_prefix("crypto:").unwrap_or(s);
        let mut fields = s.split_ascii_whitespace();
        let (Some(tag), Some(suite), Some(key_params)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(SdesError::MissingField);
        };
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SdesError::BadTag(tag.to_owned()));
        }
        let tag = tag.parse().map_err(|_| SdesError::BadTag(tag.to_owned()))?;
        let profile = SrtpProfile::from_sdes_name(suite)
            .ok_or_else(|| SdesError::UnknownSuite(suite.to_owned()))?;
        let keys = key_params
            .split(';')
            .map(|kp| parse_key_param(profile, kp))
            .collect::<Result<Vec<_>, _>>()?;
        let mki_len = keys[0].key.mki().len();
        if (keys.len() > 1 && mki_len == 0) || keys.iter().any(|k| k.key.mki().len() != mki_len) {
            return Err(SdesError::InconsistentMki);
        }
        let mut params = SessionParams::default();
        for p in fields {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            match name {
                "UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" if profile.is_aead() => {
                    return Err(SdesError::Unsupported(p.to_owned()))
                }
                "UNENCRYPTED_SRTP" => params.unencrypted_srtp = true,
                "UNENCRYPTED_SRTCP" => params.unencrypted_srtcp = true,
                "WSH" => {
                    let w = value
                        .parse()
                        .map_err(|_| SdesError::Unsupported(p.to_owned()))?;
                    params.window_size_hint = Some(w);
                }
                "KDR" if value == "0" => {}
                "KDR" | "UNAUTHENTICATED_SRTP" | "FEC_ORDER" | "FEC_KEY" => {
                    return Err(SdesError::Unsupported(p.to_owned()))
                }
                _ if name.starts_with('-') => {} // RFC 4568 §6.3.7: ignorable extension
                _ => return Err(SdesError::UnknownParameter(p.to_owned())),
            }
        }
        Ok(CryptoAttribute {
            tag,
            profile,
            keys,
            params,
        })
    }
}

impl fmt::Display for CryptoAttribute {
    /// The attribute value, without `a=crypto:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.profile.sdes_name())?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            let mut raw = [0u8; 46];
            let (key, salt) = (k.key.key(), k.key.salt());
            raw[..key.len()].copy_from_slice(key);
            raw[key.len()..key.len() + salt.len()].copy_from_slice(salt);
            write!(
                f,
                "inline:{}",
                STANDARD.encode(&raw[..key.len() + salt.len()])
            )?;
            raw.fill(0);
            if let Some(lt) = k.lifetime {
                if lt.is_power_of_two() {
                    write!(f, "|2^{}", lt.trailing_zeros())?;
                } else {
                    write!(f, "|{lt}")?;
                }
            }
            let mki = k.key.mki();
            if !mki.is_empty() {
                let v = mki.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                write!(f, "|{}:{}", v, mki.len())?;
            }
        }
        if self.params.unencrypted_srtp {
            f.write_str(" UNENCRYPTED_SRTP")?;
        }
        if self.params.unencrypted_srtcp {
            f.write_str(" UNENCRYPTED_SRTCP")?;
        }
        if let Some(w) = self.params.window_size_hint {
            write!(f, " WSH={w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc4568_example() {
        let a: CryptoAttribute = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 \
             inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
            .parse()
            .unwrap();
        assert_eq!(a.profile, SrtpProfile::AesCm128HmacSha1_80);
        assert_eq!(a.keys[0].lifetime, Some(1 << 20));
        assert_eq!(a.keys[0].key.mki(), &[0, 0, 0, 1]);
        assert_eq!(
            a.to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
        );
    }

    #[test]
    fn round_trips_generated_keys_for_every_suite() {
        let mut rng = rand_core::OsRng;
        for p in SrtpProfile::ALL {
            let a = CryptoAttribute::generate(3, p, &mut rng);
            let b: CryptoAttribute = a.to_string().parse().unwrap();
            assert_eq!(a, b);
            crate::SrtpContext::new(&b.to_config()).unwrap();
        }
    }

    #[test]
    fn refuses_bad_attributes_precisely() {
        let k = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let p = |s: &str| s.parse::<CryptoAttribute>().unwrap_err();
        assert_eq!(p("1 AES_CM_128_HMAC_SHA1_80"), SdesError::MissingField);
        assert!(matches!(
            p(&format!("x AES_CM_128_HMAC_SHA1_80 {k}")),
            SdesError::BadTag(_)
        ));
        assert!(matches!(
            p(&format!("1 F8_128_HMAC_SHA1_80 {k}")),
            SdesError::UnknownSuite(_)
        ));
        assert!(matches!(
            p(&format!("1 AES_256_CM_HMAC_SHA1_80 {k}")),
            SdesError::KeyLength { .. }
        ));
        assert!(matches!(
            p("1 AES_CM_128_HMAC_SHA1_80 uri:x"),
            SdesError::BadKeyMethod(_)
        ));
        assert_eq!(
            p("1 AES_CM_128_HMAC_SHA1_80 inline:!!!"),
            SdesError::BadBase64
        );
        assert!(matches!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 {k}|2^99")),
            SdesError::BadLifetime(_)
        ));
        assert!(matches!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 {k}|300:1")),
            SdesError::BadMki(_)
        ));
        assert_eq!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 {k}|1:8")),
            SdesError::MkiTooLong(8)
        );
        assert_eq!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 {k};{k}")),
            SdesError::InconsistentMki
        );
        assert!(matches!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 {k} KDR=3")),
            SdesError::Unsupported(_)
        ));
        assert!(matches!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 {k} FOO")),
            SdesError::UnknownParameter(_)
        ));
        let ok: CryptoAttribute =
            format!("1 AES_CM_128_HMAC_SHA1_80 {k} UNENCRYPTED_SRTCP WSH=2048 -x")
                .parse()
                .unwrap();
        assert!(ok.params.unencrypted_srtcp);
        assert_eq!(ok.to_config().replay_window, 2048);
    }
}
