//! Small SIP helpers both proxies share: local responses, branch derivation, the checks a
//! proxy needs before it touches a request, and which counter a refusal belongs to.

use std::sync::atomic::Ordering;

use edgeway_sip::{HeaderName, ParseError, Request, Response, Via};
use sha2::{Digest, Sha256};

use crate::counters::Counters;

/// The To tag of every response this node answers itself ([`local_response`]).
pub(crate) const LOCAL_TAG: &str = "ew";

/// Whether `req` is the ACK of a non-2xx response this node answered itself (its To tag
/// is [`LOCAL_TAG`]): such an ACK is hop by hop (RFC 3261 §17.2.1) and ends here.
pub(crate) fn acks_local_response(req: &Request) -> bool {
    req.method == edgeway_sip::Method::Ack
        && req
            .headers
            .to_addr()
            .is_ok_and(|to| to.tag() == Some(LOCAL_TAG))
}

/// A response this node answers itself, serialized.
pub(crate) fn local_response(
    req: &Request,
    status: u16,
    reason: &str,
    extra: &[(HeaderName, String)],
) -> Vec<u8> {
    let mut resp: Response = req.make_response(status, reason, Some(LOCAL_TAG));
    for (name, value) in extra {
        // Values here are made by this node; a refusal would only lose the extra line.
        let _ = resp.headers.push(name.clone(), value.clone());
    }
    resp.to_bytes()
}

/// Counts a refusal on `counter` and builds its response.
pub(crate) fn refuse(
    counter: &std::sync::atomic::AtomicU64,
    req: &Request,
    status: u16,
    reason: &str,
    extra: &[(HeaderName, String)],
) -> Vec<u8> {
    counter.fetch_add(1, Ordering::Relaxed);
    local_response(req, status, reason, extra)
}

/// An RFC 3261 branch for a request forwarded by this node: a hash of what identifies
/// the incoming transaction, so a retransmission, ACK or CANCEL maps to the same branch.
pub(crate) fn derived_branch(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    format!("z9hG4bK-ew{}", &hex::encode(hash.finalize())[..20])
}

/// The checks done before proxying: the headers every forwarded request needs parse.
/// `Err` is the 400 to answer with (counted as malformed).
pub(crate) fn check_request(req: &Request, counters: &Counters) -> Result<Via, Vec<u8>> {
    let checked = (|| {
        let via = req.headers.top_via()?;
        req.headers.call_id()?;
        req.headers.cseq()?;
        req.headers.from_addr()?;
        req.headers.to_addr()?;
        Ok::<Via, ParseError>(via)
    })();
    checked.map_err(|e| {
        counters.malformed.fetch_add(1, Ordering::Relaxed);
        bad_request(req, &e)
    })
}

/// A 400 whose reason names the error.
pub(crate) fn bad_request(req: &Request, e: &dyn std::fmt::Display) -> Vec<u8> {
    local_response(req, 400, &reason_phrase("Bad Request", e), &[])
}

/// Pops the top Via of a response if this node wrote it (branch prefix and host match)
/// and another Via remains to route it by: a node that originates no requests has no use
/// for a response that ends at itself (found by the `proxy` fuzz target).
pub(crate) fn pop_own_via(resp: &mut Response, host: &str) -> Option<Via> {
    let vias = resp.headers.via().ok()?;
    let via = vias.first()?.clone();
    let ours = via.branch().is_some_and(|b| b.starts_with("z9hG4bK-ew"))
        && via.host.to_string().eq_ignore_ascii_case(host);
    if !ours || vias.len() < 2 {
        return None;
    }
    resp.headers.remove_first_value(&HeaderName::Via).ok()?;
    Some(via)
}

/// Counts a parse or framing refusal under the counter it belongs to.
pub(crate) fn count_parse_error(counters: &Counters, e: &ParseError) {
    let counter = match e {
        ParseError::TooLarge { .. } | ParseError::ContentLengthExceedsLimit { .. } => {
            &counters.oversized
        }
        ParseError::TooManyHeaders { .. } | ParseError::HeaderLineTooLong { .. } => {
            &counters.header_flood
        }
        _ => &counters.malformed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A one-line reason phrase for a refusal (no CR/LF, bounded).
pub(crate) fn reason_phrase(prefix: &str, e: &dyn std::fmt::Display) -> String {
    let text: String = format!("{prefix} ({e})")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text
}

/// Decrements Max-Forwards; `Err` carries the 483 (or 400) to answer with.
pub(crate) fn hop(req: &mut Request) -> Result<(), Vec<u8>> {
    match req.decrement_max_forwards() {
        Ok(None) => Err(local_response(req, 483, "Too Many Hops", &[])),
        Ok(Some(_)) => Ok(()),
        Err(e) => Err(bad_request(req, &e)),
    }
}
