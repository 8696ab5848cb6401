//! The one error type of ucm-sim's library layer.

use thiserror::Error;

/// Why configuration could not be loaded or a request could not be sent.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UcmSimError {
    /// The users file is malformed (the message names the field or user).
    #[error("users file: {0}")]
    UsersFile(String),
    /// The configuration file is malformed (the message names the field).
    #[error("config file: {0}")]
    Config(String),
    /// `send` named a user that has no registered binding.
    #[error("user {0:?} has no registered contact")]
    NotRegistered(String),
    /// The connection the user registered on has closed (the binding stays until it expires).
    #[error("connection {0} the user registered on has closed")]
    ConnectionClosed(u64),
    /// `send` named a user that is not in the directory.
    #[error("no user {0:?} in the directory")]
    UnknownUser(String),
    /// `send` asked for a method ucm-sim does not originate.
    #[error("method {0:?} cannot be sent (only OPTIONS and MESSAGE)")]
    UnsupportedMethod(String),
    /// A stored binding could not be turned into a request (its Contact or Path is bad).
    #[error("binding of {user:?} cannot be used: {reason}")]
    BadBinding {
        /// The user.
        user: String,
        /// What is wrong.
        reason: String,
    },
    /// `call` named a caller that is not a simulated phone (`phone = "sim"`).
    #[error("user {0:?} is not a simulated phone (phone = \"sim\")")]
    NotASimPhone(String),
    /// `hangup` named no current call.
    #[error("no call {0}")]
    NoSuchCall(u64),
    /// `hangup` named a call between two registered users (hang up at a phone).
    #[error("call {0} is proxied between registered users: hang up at one of the phones")]
    NotASimCall(u64),
    /// Media could not be set up (no port, or the simulated phones' SDP did not agree).
    #[error("media: {0}")]
    Media(String),
}
