//! Attended transfer across the B2BUA (RFC 3891 `Replaces`, RFC 3515 `Refer-To`). A
//! `Replaces` header (in an INVITE) or a Refer-To URI's `?Replaces=` header (in a REFER)
//! names a dialog by the identifiers of the leg it was written on: that leg's Call-ID, and
//! its two tags as the UA that will receive the INVITE sees them (RFC 3891 §3: `to-tag` is
//! compared to that UA's local tag, `from-tag` to its remote tag). Behind a B2BUA that UA
//! holds the *other* leg's dialog, with another Call-ID and other tags, so the value must
//! be rewritten on the way through: [`DialogPair::map_replaces`] turns one leg's
//! identifiers into the other's (tags swapped per side, the orientation kept), and
//! [`rewrite_refer_to`] applies a mapping to a Refer-To value.
//!
//! A `Replaces` whose Call-ID is not one of this node's dialogs on that leg passes
//! unchanged (the dialog may not cross this node at all: an inside consultation call
//! named in a REFER to the outside). One whose Call-ID is ours but whose tags match
//! neither orientation cannot be mapped: for an INVITE that is RFC 3891 §3's "no match",
//! answered 481 by the caller.

use std::fmt;

use edgeway_sip::{NameAddr, Uri};
use thiserror::Error;

use crate::dialogs::DialogPair;
use crate::Leg;

/// Why a `Replaces` value (or the Refer-To carrying one) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplacesError {
    /// Not `callid;to-tag=..;from-tag=..` (RFC 3891 §6.1).
    #[error("Replaces {value:?}: {reason}")]
    Syntax {
        /// The value (at most 64 characters).
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The Refer-To value is not a name-addr or addr-spec.
    #[error("Refer-To {value:?}: {reason}")]
    ReferTo {
        /// The value (at most 64 characters).
        value: String,
        /// What the parser said.
        reason: &'static str,
    },
    /// The Call-ID is one of this node's dialogs on that leg, the tags are not (RFC 3891
    /// §3: 481 Call/Transaction Does Not Exist).
    #[error("Replaces names the {leg} dialog {call_id:?} with tags that are not its own")]
    NoMatch {
        /// The leg.
        leg: Leg,
        /// The Call-ID.
        call_id: String,
    },
}

/// A parsed `Replaces` value: `call-id;to-tag=..;from-tag=..` and any other parameters
/// (`early-only`, extensions), kept in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    /// The dialog's Call-ID.
    pub call_id: String,
    /// The tag the receiving UA compares to its local tag.
    pub to_tag: String,
    /// The tag the receiving UA compares to its remote tag.
    pub from_tag: String,
    /// The other parameters as written (`early-only`, ...).
    pub other: Vec<String>,
}

fn clipped(s: &str) -> String {
    s.chars().take(64).collect()
}

impl Replaces {
    /// Parses a `Replaces` value (RFC 3891 §6.1). Both tags are required.
    pub fn parse(value: &str) -> Result<Replaces, ReplacesError> {
        let bad = |reason| ReplacesError::Syntax {
            value: clipped(value),
            reason,
        };
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().unwrap_or_default();
        if call_id.is_empty() {
            return Err(bad("no Call-ID"));
        }
        if call_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '<' | '>' | '"'))
        {
            return Err(bad("character not allowed in a Call-ID"));
        }
        let (mut to_tag, mut from_tag, mut other) = (None, None, Vec::new());
        for p in parts {
            let (name, v) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p, None),
            };
            if name.is_empty() {
                return Err(bad("empty parameter"));
            }
            let slot = if name.eq_ignore_ascii_case("to-tag") {
                &mut to_tag
            } else if name.eq_ignore_ascii_case("from-tag") {
                &mut from_tag
            } else {
                other.push(p.to_owned());
                continue;
            };
            match v {
                Some(v) if !v.is_empty() && slot.is_none() => *slot = Some(v.to_owned()),
                Some(v) if !v.is_empty() => return Err(bad("a tag given twice")),
                _ => return Err(bad("a tag without a value")),
            }
        }
        Ok(Replaces {
            call_id: call_id.to_owned(),
            to_tag: to_tag.ok_or_else(|| bad("no to-tag"))?,
            from_tag: from_tag.ok_or_else(|| bad("no from-tag"))?,
            other,
        })
    }
}

impl fmt::Display for Replaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};to-tag={};from-tag={}",
            self.call_id, self.to_tag, self.from_tag
        )?;
        for p in &self.other {
            write!(f, ";{p}")?;
        }
        Ok(())
    }
}

impl DialogPair {
    /// `replaces`, written on `leg` for one of this pair's dialogs there, rewritten to name
    /// the pair's dialog on the other leg; `Ok(None)` when its Call-ID is not this pair's
    /// on `leg`, [`ReplacesError::NoMatch`] when the Call-ID is but the tags are not.
    pub fn map_replaces(
        &self,
        leg: Leg,
        replaces: &Replaces,
    ) -> Result<Option<Replaces>, ReplacesError> {
        let here = self.dialog(leg).id();
        let there = self.dialog(other(leg)).id();
        if replaces.call_id != here.call_id {
            return Ok(None);
        }
        let tags = (replaces.to_tag.as_str(), replaces.from_tag.as_str());
        // The receiving UA on `leg` is this B2BUA (its local tag is the to-tag); on the
        // other leg it is the far UA, whose local tag is this B2BUA's remote tag there.
        let (local, remote) = (here.local_tag.as_str(), here.remote_tag.as_str());
        let (to_tag, from_tag) = if tags == (local, remote) {
            (&there.remote_tag, &there.local_tag)
        } else if tags == (remote, local) {
            (&there.local_tag, &there.remote_tag)
        } else {
            return Err(ReplacesError::NoMatch {
                leg,
                call_id: clipped(&replaces.call_id),
            });
        };
        Ok(Some(Replaces {
            call_id: there.call_id.clone(),
            to_tag: to_tag.clone(),
            from_tag: from_tag.clone(),
            other: replaces.other.clone(),
        }))
    }
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::Outside => Leg::Inside,
        Leg::Inside => Leg::Outside,
    }
}

/// The `Replaces` a Refer-To value's SIP URI carries (`?Replaces=`, %-decoded), if any.
pub fn refer_to_replaces(refer_to: &str) -> Result<Option<Replaces>, ReplacesError> {
    let target = parse_refer_to(refer_to)?;
    match replaces_header(&target.uri) {
        Some(v) => Replaces::parse(v).map(Some),
        None => Ok(None),
    }
}

/// `refer_to` with its URI's `Replaces` header set to `mapped` (the rest as it was,
/// re-serialized with the escaping RFC 3261 §19.1.1 asks of URI headers).
pub fn rewrite_refer_to(refer_to: &str, mapped: &Replaces) -> Result<String, ReplacesError> {
    let mut target = parse_refer_to(refer_to)?;
    if let Some(sip) = target.uri.as_sip_mut() {
        for (name, value) in &mut sip.headers {
            if name.eq_ignore_ascii_case("Replaces") {
                *value = mapped.to_string();
            }
        }
    }
    Ok(target.to_string())
}

fn parse_refer_to(refer_to: &str) -> Result<NameAddr, ReplacesError> {
    NameAddr::parse(refer_to).map_err(|reason| ReplacesError::ReferTo {
        value: clipped(refer_to),
        reason,
    })
}

fn replaces_header(uri: &Uri) -> Option<&str> {
    uri.as_sip()?
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Replaces"))
        .map(|(_, v)| v.as_str())
}
