//! Allow list rules: what a URL is matched against.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::automatic::NodeKind;
use crate::method::MethodSet;
use crate::normalize::NormalizedUrl;

/// How a rule's path is compared with a request's (both normalized).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    /// The paths are equal.
    Exact,
    /// The request's path starts with the rule's, character by character: the guide allows a
    /// partial path, so `/myPath4` also matches `/myPath4x`.
    Prefix,
}

impl MatchType {
    /// `exact` or `prefix`, as the CSV files spell them.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::Exact => "exact",
            MatchType::Prefix => "prefix",
        }
    }
}

/// The methods a rule lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowedMethods {
    /// The allow list's default methods at the time of the request ("Use defaults": a change
    /// of the defaults applies to every such rule).
    Defaults,
    /// Exactly these ("Choose methods"), whatever the defaults.
    Chosen(MethodSet),
}

impl fmt::Display for AllowedMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedMethods::Defaults => f.write_str("defaults"),
            AllowedMethods::Chosen(set) => write!(f, "{set}"),
        }
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Generated for a discovered node; cannot be edited or deleted.
    Automatic {
        /// The kind of node the rule serves.
        kind: NodeKind,
    },
    /// Made by the operator (uploaded or created).
    Editable,
}

/// One rule of the allow list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// Scheme, host and port must equal the request's; the path is compared by `match_type`.
    pub url: NormalizedUrl,
    /// Exact or prefix comparison of paths.
    pub match_type: MatchType,
    /// The methods allowed.
    pub methods: AllowedMethods,
    /// The deployment the rule belongs to; `None` applies to every deployment.
    pub deployment: Option<String>,
    /// The operator's text.
    pub description: String,
    /// Automatic or editable.
    pub origin: Origin,
}

impl Rule {
    /// Whether the request's URL falls under this rule (methods and deployment aside).
    pub fn covers(&self, url: &NormalizedUrl) -> bool {
        self.url.scheme == url.scheme
            && self.url.host == url.host
            && self.url.port == url.port
            && match self.match_type {
                MatchType::Exact => self.url.path == url.path,
                MatchType::Prefix => url.path.starts_with(&self.url.path),
            }
    }

    /// Whether the rule applies in `deployment` (`None`: a rule for every deployment only).
    pub fn applies_in(&self, deployment: Option<&str>) -> bool {
        match (&self.deployment, deployment) {
            (None, _) => true,
            (Some(own), Some(asked)) => own == asked,
            (Some(_), None) => false,
        }
    }

    /// Whether two rules are the same rule for upload purposes: same URL, match type and
    /// deployment (methods and description may differ, which is exactly the mistake to catch).
    pub fn same_target(&self, other: &Rule) -> bool {
        self.url == other.url
            && self.match_type == other.match_type
            && self.deployment == other.deployment
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} methods={}",
            self.match_type.as_str(),
            self.url,
            self.methods
        )?;
        if let Some(deployment) = &self.deployment {
            write!(f, " deployment={deployment:?}")?;
        }
        if let Origin::Automatic { kind } = &self.origin {
            write!(f, " (automatic, {})", kind.label())?;
        }
        Ok(())
    }
}
