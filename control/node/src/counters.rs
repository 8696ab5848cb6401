//! The node's counters: one atomic per event, shared by the IO tasks and the proxy logic,
//! reported by the admin API's `status`. Every refusal and every piece of bad input has one.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Event counters (monotonic since start).
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// All counters as a JSON object, names as written here.
            pub fn to_json(&self) -> serde_json::Value {
                let mut map = serde_json::Map::new();
                $(map.insert(stringify!($name).to_owned(), self.$name.load(Ordering::Relaxed).into());)*
                serde_json::Value::Object(map)
            }
        }
    };
}

counters! {
    /// Client TLS connections accepted (handshake completed).
    client_connections,
    /// Client connections refused: the per-source limit was reached.
    refused_per_source_limit,
    /// Client TLS handshakes that failed.
    client_tls_failed,
    /// Client TLS handshakes that did not finish in time (slow clients).
    client_tls_timeout,
    /// Client connections closed for being idle.
    client_idle_closed,
    /// RFC 5626 CRLF keep-alive pings answered.
    keepalive_pings,
    /// SIP messages received from clients.
    client_messages,
    /// Malformed SIP answered with 400 (and the connection closed when framing was lost).
    malformed,
    /// Messages that framed but did not parse: requests answered with a 400 the sender
    /// can match, and the connection kept (also counted as malformed or header_flood).
    malformed_survived,
    /// Messages over the size limit (513 sent, connection closed).
    oversized,
    /// Messages with too many or too long header lines (header floods).
    header_flood,
    /// Requests for domains not served (404).
    unknown_domain,
    /// New registrations refused in maintenance mode (503).
    maintenance_refused,
    /// New calls (out-of-dialog INVITEs) refused in maintenance mode (503 + Retry-After).
    maintenance_calls_refused,
    /// Requests refused because the traversal zone was down (503).
    traversal_down_refused,
    /// Requests for a client flow that no longer exists (430).
    flow_gone,
    /// Messages dropped because a connection's send queue was full (slow reader).
    send_queue_full,
    /// 401/407 challenges relayed back to clients.
    challenges_relayed,
    /// REGISTER requests proxied towards Unified CM.
    registers_proxied,
    /// Successful registration responses seen (2xx to REGISTER).
    registrations_accepted,
    /// Bindings removed because they expired.
    bindings_expired,
    /// Requests from Unified CM delivered towards a registered client.
    inbound_requests,
    /// Requests from Unified CM for no known binding (404/480).
    inbound_unknown,
    /// Requests refused because no Unified CM node was reachable (503).
    ucm_unreachable,
    /// Responses that matched no Via of this node (dropped).
    stray_responses,
    /// Traversal connections established.
    traversal_connected,
    /// Traversal connections lost (closed, failed, or dead-peer timeout).
    traversal_lost,
    /// Traversal peers refused: certificate lacks the Client Authentication EKU.
    traversal_refused_eku,
    /// Traversal peers refused: subject name does not match "TLS verify subject name".
    traversal_refused_subject,
    /// Traversal handshakes that failed for other reasons (chain, protocol).
    traversal_tls_failed,
    /// Traversal keep-alive pings sent (core) or answered (edge).
    traversal_pings,
    /// Calls whose media this node planned (INVITEs that opened a call).
    calls_started,
    /// Calls whose media was torn down (BYE, CANCEL, failure, refusal).
    calls_ended,
    /// SDP bodies refused by the media planner (its status and Warning sent back).
    media_refused,
    /// Flow-table writes that failed (the call was torn down).
    media_table_errors,
    /// Requests refused for their transfer headers (core): a malformed Replaces or
    /// Refer-To (400), or an INVITE whose Replaces names a call of this core with tags
    /// that are not its dialog's (481, RFC 3891).
    transfer_refused,
    /// Calls the core hung up because their session interval (RFC 4028 Session-Expires)
    /// passed with no refresh.
    calls_session_expired,
}
