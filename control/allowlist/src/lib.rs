//! `edgeway-allowlist`: the HTTP allow list of the core (Expressway-C), sans-IO.
//!
//! Every HTTP request a remote client sends through the edge names an internal server; the
//! core proxies it only when the allow list says so. This crate holds the whole decision and
//! does no IO: the caller gives it rules (automatic ones generated from discovered nodes by
//! [`automatic_rules`], editable ones from the CSV rules file via [`parse_rules`] or from the
//! JSON [`RuleStore`]), asks [`AllowList::decide`] with `(deployment, method, url)` and gets
//! a [`Decision`] (allowed, the deciding rule, the [`Reason`], the canonical URL to forward),
//! which it counts in [`Counters`] and exports. Tests files run with [`run_tests`].
//!
//! URLs are normalized ([`NormalizedUrl::parse`]) before matching, rules and requests alike,
//! so a prefix rule cannot be escaped by encodings, dot segments, case or default ports; the
//! rules are in [`normalize`]'s docs. The caller must forward [`Decision::url`], not the
//! request's original text.
//!
//! Reference: the X8.10 MRA deployment guide, "About the HTTP Allow List on Expressway-C",
//! "Allow List Rules File Reference" and "Allow List Tests File Reference". Where the guide is
//! silent, this crate infers, and says so where it does:
//! - table 3's rows (paths, ports, methods of the automatic rules): [`automatic`];
//! - the factory default methods: [`FACTORY_DEFAULT_METHODS`] (GET, HEAD, POST, PUT);
//! - the method vocabulary (WebDAV methods allowed, CONNECT and TRACE never): [`Method`];
//! - prefix matching is on characters, as the guide allows a "partial path"; the query takes
//!   no part in matching;
//! - a rule without a deployment applies to every deployment; a request or test without one
//!   is judged in [`AllowList::set_default_deployment`]'s deployment;
//! - when several rules cover a URL, any that allows the method allows the request;
//! - CSV details (short rows, case, duplicates, refused test URLs): [`files`].

#![forbid(unsafe_code)]

pub mod automatic;
pub mod files;
mod list;
mod method;
pub mod normalize;
mod rule;
mod store;

pub use automatic::{automatic_rules, Node, NodeKind};
pub use files::{
    parse_rules, parse_tests, run_tests, AllowListTest, CsvError, Parsed, TestOutcome,
};
pub use list::{AllowList, Counters, Decision, Reason, FACTORY_DEFAULT_METHODS};
pub use method::{Method, MethodSet};
pub use normalize::{NormalizeError, NormalizedUrl, Scheme};
pub use rule::{AllowedMethods, MatchType, Origin, Rule};
pub use store::{RuleStore, STORE_VERSION};

/// Errors of this crate outside a CSV row (those are [`CsvError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllowListError {
    /// A discovered node's host cannot make a rule URL.
    #[error("node {index} ({host:?}): {source}")]
    BadNode {
        /// The node's index in the list given.
        index: usize,
        /// Its host as given.
        host: String,
        /// Why its URL was refused.
        source: NormalizeError,
    },
    /// The rules store's JSON cannot be used.
    #[error("rules store: {0}")]
    BadStore(String),
}
