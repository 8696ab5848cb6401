//! The transaction layer (RFC 3261 §17, with the RFC 6026 "Accepted" states).
//!
//! [`TransactionLayer`] owns every client and server transaction of one SIP element.
//! It is sans-IO: the caller passes received messages, transport failures and the time;
//! it takes out datagrams/stream writes with [`TransactionLayer::poll_transmit`], events
//! for the transaction user with [`TransactionLayer::poll_event`], and the next instant
//! it must call [`TransactionLayer::handle_timeout`] with [`TransactionLayer::poll_timeout`].
//!
//! The address type `A` is the caller's: a socket address, a connection id, anything
//! that says where a message goes. Transactions remember the `A` of their peer.

use crate::error::ParseError;
use crate::message::{Message, Request, Response};
use crate::typed::Method;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Timer values (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
    /// Delay after which an INVITE server transaction sends `100 Trying` itself if the
    /// TU has not sent a provisional response (§17.2.1); `None` disables it.
    pub auto_trying: Option<Duration>,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            auto_trying: Some(Duration::from_millis(200)),
        }
    }
}

/// Identifies a transaction inside one [`TransactionLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u64);

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn#{}", self.0)
    }
}

/// Transaction states (§17.1.1, §17.1.2, §17.2.1, §17.2.2, RFC 6026).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Client INVITE: request sent, nothing received.
    Calling,
    /// Non-INVITE: request sent (client) or received (server), no response yet.
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final non-2xx (INVITE) or any final (non-INVITE) response was received or sent.
    Completed,
    /// INVITE with a 2xx: waiting for 2xx retransmissions / the ACK (RFC 6026).
    Accepted,
    /// INVITE server: the ACK for a non-2xx arrived.
    Confirmed,
}

/// Which of the four state machines a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    /// INVITE client (§17.1.1).
    ClientInvite,
    /// Non-INVITE client (§17.1.2).
    ClientNonInvite,
    /// INVITE server (§17.2.1).
    ServerInvite,
    /// Non-INVITE server (§17.2.2).
    ServerNonInvite,
}

/// Bytes to send and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Destination, as the caller gave it.
    pub destination: A,
    /// The serialized message.
    pub payload: Vec<u8>,
}

/// What the transaction layer tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionEvent<A> {
    /// A new request created a server transaction; answer with
    /// [`TransactionLayer::respond`].
    Request {
        /// The new server transaction.
        id: TransactionId,
        /// The request.
        request: Request,
        /// Where it came from (responses go back there).
        source: A,
    },
    /// An ACK that is not part of a transaction: the ACK for a 2xx, which belongs to the
    /// dialog. `transaction` is the INVITE server transaction it acknowledges, when that
    /// transaction is still waiting (its 2xx retransmissions stop).
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        source: A,
        /// The INVITE server transaction it acknowledged, if still known.
        transaction: Option<TransactionId>,
    },
    /// A response for a client transaction (provisional, final, or a 2xx retransmission
    /// while the INVITE client transaction is Accepted, which the TU must ACK again).
    Response {
        /// The client transaction.
        id: TransactionId,
        /// The response.
        response: Response,
    },
    /// A response that matched no client transaction (a proxy forwards it statelessly).
    StrayResponse {
        /// The response.
        response: Response,
        /// Where it came from.
        source: A,
    },
    /// Timer B or F (no final response), H (no ACK for a non-2xx) or L (no ACK for a
    /// 2xx: the session should be ended with BYE) fired.
    Timeout {
        /// The transaction.
        id: TransactionId,
    },
    /// The caller reported a transport failure for this transaction.
    TransportError {
        /// The transaction.
        id: TransactionId,
    },
    /// The transaction is gone; its id will not appear again.
    Terminated {
        /// The transaction.
        id: TransactionId,
    },
}

/// Why the transaction layer refused an input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The message lacks what matching needs (Via, CSeq...).
    #[error(transparent)]
    Message(#[from] ParseError),
    /// The top Via branch lacks the RFC 3261 magic cookie; RFC 2543 matching is not
    /// supported.
    #[error("Via: branch {0:?} lacks the z9hG4bK magic cookie")]
    NoMagicCookie(String),
    /// ACK is not sent in a client transaction; use [`TransactionLayer::send_stateless`].
    #[error("ACK does not start a client transaction")]
    AckIsNotATransaction,
    /// A client transaction with this branch and method already exists.
    #[error("a transaction with branch {0:?} already exists")]
    DuplicateBranch(String),
    /// No transaction with this id (it may have terminated).
    #[error("unknown transaction {0}")]
    UnknownTransaction(TransactionId),
    /// Responses can only be sent on server transactions.
    #[error("{0} is not a server transaction")]
    NotAServerTransaction(TransactionId),
    /// The transaction's state does not allow sending this response.
    #[error("{id} in state {state:?} cannot send a {status} response")]
    InvalidState {
        /// The transaction.
        id: TransactionId,
        /// Its state.
        state: TransactionState,
        /// The refused status.
        status: u16,
    },
    /// A status outside 100-699.
    #[error("status {0} is not in 100-699")]
    BadStatus(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: Method,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: Method,
}

#[derive(Debug)]
struct Txn<A> {
    kind: TransactionKind,
    state: TransactionState,
    peer: A,
    reliable: bool,
    request: Request,
    request_bytes: Vec<u8>,
    last_response: Option<Vec<u8>>,
    ack_bytes: Option<Vec<u8>>,
    client_key: Option<ClientKey>,
    server_key: Option<ServerKey>,
    accepted_key: Option<(String, u32, String)>,
    acked: bool,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    cleanup_at: Option<Instant>,
    trying_at: Option<Instant>,
    registered: Option<Instant>,
}

impl<A> Txn<A> {
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.timeout_at,
            self.cleanup_at,
            self.trying_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// All transactions of one SIP element; see the module docs.
#[derive(Debug)]
pub struct TransactionLayer<A> {
    config: TransactionConfig,
    next_id: u64,
    txns: HashMap<TransactionId, Txn<A>>,
    clients: HashMap<ClientKey, TransactionId>,
    servers: HashMap<ServerKey, TransactionId>,
    accepted: HashMap<(String, u32, String), TransactionId>,
    timers: BTreeSet<(Instant, TransactionId)>,
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<TransactionEvent<A>>,
}

fn top_branch(headers: &crate::header::Headers) -> Result<(String, String), TransactionError> {
    let via = headers.top_via()?;
    let branch = via
        .branch()
        .ok_or_else(|| ParseError::header("Via", "missing branch parameter"))?;
    if !branch.starts_with(crate::typed::MAGIC_COOKIE)
        || branch.len() == crate::typed::MAGIC_COOKIE.len()
    {
        return Err(TransactionError::NoMagicCookie(branch.to_owned()));
    }
    let sent_by = match via.port {
        Some(p) => format!("{}:{p}", via.host),
        None => via.host.to_string(),
    };
    Ok((branch.to_owned(), sent_by.to_ascii_lowercase()))
}

impl<A: Clone> TransactionLayer<A> {
    /// An empty layer.
    pub fn new(config: TransactionConfig) -> Self {
        TransactionLayer {
            config,
            next_id: 0,
            txns: HashMap::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            accepted: HashMap::new(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// `true` when no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// State of a live transaction.
    pub fn state(&self, id: TransactionId) -> Option<TransactionState> {
        self.txns.get(&id).map(|t| t.state)
    }

    /// Kind of a live transaction.
    pub fn kind(&self, id: TransactionId) -> Option<TransactionKind> {
        self.txns.get(&id).map(|t| t.kind)
    }

    /// The request a live transaction was created for.
    pub fn request(&self, id: TransactionId) -> Option<&Request> {
        self.txns.get(&id).map(|t| &t.request)
    }

    /// Starts a client transaction and queues the request for sending. `reliable` says
    /// whether the transport retransmits by itself (TCP, TLS, SCTP): then timers A and E
    /// are not used and D and K are zero.
    pub fn start_client(
        &mut self,
        now: Instant,
        request: Request,
        destination: A,
        reliable: bool,
    ) -> Result<TransactionId, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckIsNotATransaction);
        }
        let (branch, _) = top_branch(&request.headers)?;
        let key = ClientKey {
            branch: branch.clone(),
            method: request.method.clone(),
        };
        if self.clients.contains_key(&key) {
            return Err(TransactionError::DuplicateBranch(branch));
        }
        let id = self.alloc_id();
        let invite = request.method == Method::Invite;
        let bytes = request.to_bytes();
        let t1 = self.config.t1;
        let txn = Txn {
            kind: if invite {
                TransactionKind::ClientInvite
            } else {
                TransactionKind::ClientNonInvite
            },
            state: if invite {
                TransactionState::Calling
            } else {
                TransactionState::Trying
            },
            peer: destination.clone(),
            reliable,
            request,
            request_bytes: bytes.clone(),
            last_response: None,
            ack_bytes: None,
            client_key: Some(key.clone()),
            server_key: None,
            accepted_key: None,
            acked: false,
            retransmit_at: (!reliable).then_some(now + t1),
            interval: t1,
            timeout_at: Some(now + 64 * t1),
            cleanup_at: None,
            trying_at: None,
            registered: None,
        };
        self.transmits.push_back(Transmit {
            destination,
            payload: bytes,
        });
        self.clients.insert(key, id);
        self.txns.insert(id, txn);
        self.reschedule(id);
        Ok(id)
    }

    /// Sends a response on a server transaction (provisional or final).
    pub fn respond(
        &mut self,
        now: Instant,
        id: TransactionId,
        response: Response,
    ) -> Result<(), TransactionError> {
        let status = response.status;
        if !(100..=699).contains(&status) {
            return Err(TransactionError::BadStatus(status));
        }
        let t1 = self.config.t1;
        let txn = self
            .txns
            .get_mut(&id)
            .ok_or(TransactionError::UnknownTransaction(id))?;
        let invalid = TransactionError::InvalidState {
            id,
            state: txn.state,
            status,
        };
        let bytes = response.to_bytes();
        match txn.kind {
            TransactionKind::ClientInvite | TransactionKind::ClientNonInvite => {
                return Err(TransactionError::NotAServerTransaction(id))
            }
            TransactionKind::ServerInvite => match (txn.state, status) {
                (TransactionState::Proceeding, 100..=199) => {
                    txn.trying_at = None;
                }
                (TransactionState::Proceeding | TransactionState::Accepted, 200..=299) => {
                    txn.state = TransactionState::Accepted;
                    txn.trying_at = None;
                    if txn.cleanup_at.is_none() {
                        txn.cleanup_at = Some(now + 64 * t1); // Timer L
                    }
                    if !txn.reliable && !txn.acked {
                        // §13.3.1.4: the UAS core retransmits the 2xx until the ACK.
                        txn.retransmit_at = Some(now + t1);
                        txn.interval = t1;
                    }
                    if txn.accepted_key.is_none() {
                        let h = &txn.request.headers;
                        if let (Ok(call_id), Ok(cseq), Ok(from)) =
                            (h.call_id(), h.cseq(), h.from_addr())
                        {
                            let key = (
                                call_id.to_owned(),
                                cseq.seq,
                                from.tag().unwrap_or_default().to_owned(),
                            );
                            self.accepted.insert(key.clone(), id);
                            txn.accepted_key = Some(key);
                        }
                    }
                }
                (TransactionState::Proceeding, 300..=699) => {
                    txn.state = TransactionState::Completed;
                    txn.trying_at = None;
                    if !txn.reliable {
                        txn.retransmit_at = Some(now + t1); // Timer G
                        txn.interval = t1;
                    }
                    txn.timeout_at = Some(now + 64 * t1); // Timer H
                }
                _ => return Err(invalid),
            },
            TransactionKind::ServerNonInvite => match (txn.state, status) {
                (TransactionState::Trying | TransactionState::Proceeding, 100..=199) => {
                    txn.state = TransactionState::Proceeding;
                }
                (TransactionState::Trying | TransactionState::Proceeding, 200..=699) => {
                    txn.state = TransactionState::Completed;
                    // Timer J
                    txn.cleanup_at = Some(
                        now + if txn.reliable {
                            Duration::ZERO
                        } else {
                            64 * t1
                        },
                    );
                }
                _ => return Err(invalid),
            },
        }
        txn.last_response = Some(bytes.clone());
        self.transmits.push_back(Transmit {
            destination: txn.peer.clone(),
            payload: bytes,
        });
        self.reschedule(id);
        Ok(())
    }

    /// Queues a message outside any transaction (the ACK for a 2xx, a stateless reply,
    /// a keep-alive answer...).
    pub fn send_stateless(&mut self, destination: A, message: &Message) {
        self.transmits.push_back(Transmit {
            destination,
            payload: message.to_bytes(),
        });
    }

    /// Handles a received message: matches it to a transaction (§17.1.3, §17.2.3) or
    /// creates a server transaction. `reliable` describes the transport it came on.
    pub fn handle_message(
        &mut self,
        now: Instant,
        message: Message,
        source: A,
        reliable: bool,
    ) -> Result<(), TransactionError> {
        match message {
            Message::Response(r) => self.handle_response(now, r, source),
            Message::Request(r) => self.handle_request(now, r, source, reliable),
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
        source: A,
    ) -> Result<(), TransactionError> {
        let via = response.headers.top_via()?;
        let cseq = response.headers.cseq()?;
        let key = ClientKey {
            branch: via.branch().unwrap_or_default().to_owned(),
            method: cseq.method,
        };
        let Some(&id) = self.clients.get(&key) else {
            self.events
                .push_back(TransactionEvent::StrayResponse { response, source });
            return Ok(());
        };
        let (t1, t4) = (self.config.t1, self.config.t4);
        let Some(txn) = self.txns.get_mut(&id) else {
            return Ok(());
        };
        let status = response.status;
        let mut deliver = false;
        let mut terminate = false;
        match txn.kind {
            TransactionKind::ClientInvite => match (txn.state, status) {
                (TransactionState::Calling | TransactionState::Proceeding, 100..=199) => {
                    txn.state = TransactionState::Proceeding;
                    txn.retransmit_at = None;
                    deliver = true;
                }
                (TransactionState::Calling | TransactionState::Proceeding, 200..=299) => {
                    txn.state = TransactionState::Accepted;
                    txn.retransmit_at = None;
                    txn.timeout_at = None;
                    txn.cleanup_at = Some(now + 64 * t1); // Timer M
                    deliver = true;
                }
                (TransactionState::Accepted, 200..=299) => deliver = true,
                (TransactionState::Calling | TransactionState::Proceeding, 300..=699) => {
                    txn.state = TransactionState::Completed;
                    txn.retransmit_at = None;
                    txn.timeout_at = None;
                    let ack = txn.request.make_ack_for_non_2xx(&response)?.to_bytes();
                    self.transmits.push_back(Transmit {
                        destination: txn.peer.clone(),
                        payload: ack.clone(),
                    });
                    txn.ack_bytes = Some(ack);
                    // Timer D
                    let d = if txn.reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32).max(64 * t1 / 2)
                    };
                    txn.cleanup_at = Some(now + d);
                    terminate = txn.reliable;
                    deliver = true;
                }
                (TransactionState::Completed, 300..=699) => {
                    if let Some(ack) = &txn.ack_bytes {
                        self.transmits.push_back(Transmit {
                            destination: txn.peer.clone(),
                            payload: ack.clone(),
                        });
                    }
                }
                _ => {}
            },
            TransactionKind::ClientNonInvite => match (txn.state, status) {
                (TransactionState::Trying | TransactionState::Proceeding, 100..=199) => {
                    txn.state = TransactionState::Proceeding;
                    deliver = true;
                }
                (TransactionState::Trying | TransactionState::Proceeding, 200..=699) => {
                    txn.state = TransactionState::Completed;
                    txn.retransmit_at = None;
                    txn.timeout_at = None;
                    // Timer K
                    txn.cleanup_at = Some(now + if txn.reliable { Duration::ZERO } else { t4 });
                    terminate = txn.reliable;
                    deliver = true;
                }
                _ => {}
            },
            TransactionKind::ServerInvite | TransactionKind::ServerNonInvite => {}
        }
        if deliver {
            self.events
                .push_back(TransactionEvent::Response { id, response });
        }
        if terminate {
            self.terminate(id);
        } else {
            self.reschedule(id);
        }
        Ok(())
    }

    fn handle_request(
        &mut self,
        now: Instant,
        request: Request,
        source: A,
        reliable: bool,
    ) -> Result<(), TransactionError> {
        let (branch, sent_by) = top_branch(&request.headers)?;
        let method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method.clone()
        };
        let key = ServerKey {
            branch,
            sent_by,
            method,
        };
        let t4 = self.config.t4;
        if let Some(&id) = self.servers.get(&key) {
            let Some(txn) = self.txns.get_mut(&id) else {
                return Ok(());
            };
            if request.method == Method::Ack {
                if txn.state == TransactionState::Completed {
                    txn.state = TransactionState::Confirmed;
                    txn.retransmit_at = None;
                    txn.timeout_at = None;
                    // Timer I
                    txn.cleanup_at = Some(now + if txn.reliable { Duration::ZERO } else { t4 });
                    self.reschedule(id);
                    return Ok(());
                }
                if txn.state == TransactionState::Confirmed {
                    return Ok(());
                }
                // An ACK with the INVITE's branch for a 2xx: hand it to the dialog.
                return self.handle_2xx_ack(request, source);
            }
            // A retransmission: answer with the last response, if any (§17.2.1, §17.2.2).
            let resend = match txn.state {
                TransactionState::Proceeding | TransactionState::Completed => {
                    txn.last_response.clone()
                }
                _ => None,
            };
            if let Some(payload) = resend {
                self.transmits.push_back(Transmit {
                    destination: txn.peer.clone(),
                    payload,
                });
            }
            return Ok(());
        }
        if request.method == Method::Ack {
            return self.handle_2xx_ack(request, source);
        }
        let id = self.alloc_id();
        let invite = request.method == Method::Invite;
        let txn = Txn {
            kind: if invite {
                TransactionKind::ServerInvite
            } else {
                TransactionKind::ServerNonInvite
            },
            state: if invite {
                TransactionState::Proceeding
            } else {
                TransactionState::Trying
            },
            peer: source.clone(),
            reliable,
            request: request.clone(),
            request_bytes: Vec::new(),
            last_response: None,
            ack_bytes: None,
            client_key: None,
            server_key: Some(key.clone()),
            accepted_key: None,
            acked: false,
            retransmit_at: None,
            interval: self.config.t1,
            timeout_at: None,
            cleanup_at: None,
            trying_at: if invite {
                self.config.auto_trying.map(|d| now + d)
            } else {
                None
            },
            registered: None,
        };
        self.servers.insert(key, id);
        self.txns.insert(id, txn);
        self.reschedule(id);
        self.events.push_back(TransactionEvent::Request {
            id,
            request,
            source,
        });
        Ok(())
    }

    fn handle_2xx_ack(&mut self, request: Request, source: A) -> Result<(), TransactionError> {
        let h = &request.headers;
        let key = (
            h.call_id()?.to_owned(),
            h.cseq()?.seq,
            h.from_addr()?.tag().unwrap_or_default().to_owned(),
        );
        let transaction = self.accepted.get(&key).copied();
        if let Some(id) = transaction {
            if let Some(txn) = self.txns.get_mut(&id) {
                txn.acked = true;
                txn.retransmit_at = None;
            }
            self.reschedule(id);
        }
        self.events.push_back(TransactionEvent::Ack {
            request,
            source,
            transaction,
        });
        Ok(())
    }

    /// Reports that sending for this transaction failed (§17.1.4, §17.2.4).
    pub fn handle_transport_error(&mut self, _now: Instant, id: TransactionId) {
        if self.txns.contains_key(&id) {
            self.events
                .push_back(TransactionEvent::TransportError { id });
            self.terminate(id);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            if let Some(t) = self.txns.get_mut(&id) {
                t.registered = None;
            }
            self.fire(now, id);
        }
    }

    fn fire(&mut self, now: Instant, id: TransactionId) {
        let (t1, t2) = (self.config.t1, self.config.t2);
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(txn.timeout_at) {
            txn.timeout_at = None;
            // Timer H without an ACK, B/F without a final response.
            self.events.push_back(TransactionEvent::Timeout { id });
            self.terminate(id);
            return;
        }
        if due(txn.cleanup_at) {
            // Timer L expiring with the 2xx never acknowledged.
            if txn.kind == TransactionKind::ServerInvite
                && txn.state == TransactionState::Accepted
                && !txn.acked
            {
                self.events.push_back(TransactionEvent::Timeout { id });
            }
            self.terminate(id);
            return;
        }
        if due(txn.trying_at) {
            txn.trying_at = None;
            let trying = txn.request.make_response(100, "Trying", None).to_bytes();
            txn.last_response = Some(trying.clone());
            self.transmits.push_back(Transmit {
                destination: txn.peer.clone(),
                payload: trying,
            });
        }
        if due(txn.retransmit_at) {
            let (payload, next) = match (txn.kind, txn.state) {
                // Timer A: doubles without cap.
                (TransactionKind::ClientInvite, TransactionState::Calling) => {
                    (Some(txn.request_bytes.clone()), txn.interval * 2)
                }
                // Timer E: doubles up to T2, T2 once Proceeding.
                (TransactionKind::ClientNonInvite, TransactionState::Trying) => {
                    (Some(txn.request_bytes.clone()), (txn.interval * 2).min(t2))
                }
                (TransactionKind::ClientNonInvite, TransactionState::Proceeding) => {
                    (Some(txn.request_bytes.clone()), t2)
                }
                // Timer G, and the 2xx retransmission of §13.3.1.4.
                (
                    TransactionKind::ServerInvite,
                    TransactionState::Completed | TransactionState::Accepted,
                ) => (txn.last_response.clone(), (txn.interval * 2).min(t2)),
                _ => (None, t1),
            };
            match payload {
                Some(p) => {
                    self.transmits.push_back(Transmit {
                        destination: txn.peer.clone(),
                        payload: p,
                    });
                    txn.interval = next;
                    txn.retransmit_at = Some(now + next);
                }
                None => txn.retransmit_at = None,
            }
        }
        self.reschedule(id);
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TransactionEvent<A>> {
        self.events.pop_front()
    }

    /// The INVITE server transaction a received CANCEL refers to (§9.2), if live.
    pub fn find_invite_for_cancel(&self, cancel: &Request) -> Option<TransactionId> {
        let (branch, sent_by) = top_branch(&cancel.headers).ok()?;
        self.servers
            .get(&ServerKey {
                branch,
                sent_by,
                method: Method::Invite,
            })
            .copied()
    }

    fn alloc_id(&mut self) -> TransactionId {
        self.next_id += 1;
        TransactionId(self.next_id)
    }

    fn reschedule(&mut self, id: TransactionId) {
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let next = txn.next_deadline();
        if next == txn.registered {
            return;
        }
        if let Some(old) = txn.registered {
            self.timers.remove(&(old, id));
        }
        if let Some(at) = next {
            self.timers.insert((at, id));
        }
        txn.registered = next;
    }

    fn terminate(&mut self, id: TransactionId) {
        let Some(txn) = self.txns.remove(&id) else {
            return;
        };
        if let Some(at) = txn.registered {
            self.timers.remove(&(at, id));
        }
        if let Some(k) = txn.client_key {
            self.clients.remove(&k);
        }
        if let Some(k) = txn.server_key {
            self.servers.remove(&k);
        }
        if let Some(k) = txn.accepted_key {
            self.accepted.remove(&k);
        }
        self.events.push_back(TransactionEvent::Terminated { id });
    }
}

/// A branch parameter value from caller-supplied randomness (`z9hG4bK` + hex).
pub fn branch_from_random(random: u128) -> String {
    format!("{}{random:032x}", crate::typed::MAGIC_COOKIE)
}
