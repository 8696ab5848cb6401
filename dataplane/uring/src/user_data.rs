//! The 64-bit `user_data` carried by every SQE and echoed by its CQEs.
//!
//! Layout: `kind` in bits 56..64, socket slot index in bits 32..56, buffer id or copy-slot
//! index in bits 0..32. A CQE is routed by decoding it; nothing is looked up by address.

/// What an operation was, so its completion can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// The multishot `RecvMsgMulti` of a socket (slot part unused).
    Recv = 1,
    /// A `SendMsg` from a provided buffer (slot part = buffer id).
    Send = 2,
    /// A `SendMsg` from a copy-pool slot (slot part = slot index).
    SendCopy = 3,
    /// The `AsyncCancel` of a socket's receive, queued by `close`.
    Cancel = 4,
}

/// Sockets per ring are limited by the 24 bits the index has in `user_data`.
pub(crate) const MAX_SOCKETS: u32 = 1 << 24;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) kind: OpKind,
    pub(crate) socket: u32,
    pub(crate) slot: u32,
}

impl Op {
    pub(crate) const fn new(kind: OpKind, socket: u32, slot: u32) -> Self {
        Self { kind, socket, slot }
    }

    pub(crate) const fn encode(self) -> u64 {
        ((self.kind as u64) << 56)
            | (((self.socket & (MAX_SOCKETS - 1)) as u64) << 32)
            | self.slot as u64
    }

    pub(crate) const fn decode(user_data: u64) -> Option<Self> {
        let kind = match user_data >> 56 {
            1 => OpKind::Recv,
            2 => OpKind::Send,
            3 => OpKind::SendCopy,
            4 => OpKind::Cancel,
            _ => return None,
        };
        Some(Self {
            kind,
            socket: ((user_data >> 32) as u32) & (MAX_SOCKETS - 1),
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for kind in [OpKind::Recv, OpKind::Send, OpKind::SendCopy, OpKind::Cancel] {
            for (socket, slot) in [(0, 0), (MAX_SOCKETS - 1, u32::MAX), (499, 4095)] {
                let op = Op::new(kind, socket, slot);
                assert_eq!(Op::decode(op.encode()), Some(op));
            }
        }
        assert_eq!(Op::decode(0), None);
        assert_eq!(Op::decode(9 << 56), None);
    }
}
