//! The allow list itself: rules in, `(deployment, method, url)` to [`Decision`] out.

use serde::{Deserialize, Serialize};

use crate::method::{Method, MethodSet};
use crate::normalize::{NormalizeError, NormalizedUrl};
use crate::rule::{AllowedMethods, MatchType, Origin, Rule};

/// The default methods when the operator has chosen none. The guide leaves the factory set
/// unsaid; these four are inferred (what MRA clients use through editable rules).
pub const FACTORY_DEFAULT_METHODS: [Method; 4] =
    [Method::Get, Method::Head, Method::Post, Method::Put];

/// Automatic and editable inbound rules, the default methods and the default deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
    default_methods: MethodSet,
    default_deployment: Option<String>,
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList {
            rules: Vec::new(),
            default_methods: MethodSet::of(&FACTORY_DEFAULT_METHODS),
            default_deployment: None,
        }
    }
}

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// A rule covers the URL in this deployment and allows the method.
    Allowed,
    /// The method token is not one the allow list knows (or not upper case).
    UnknownMethod,
    /// A rule covers the URL in this deployment, but none allows the method.
    MethodNotAllowed,
    /// Rules cover the URL only in other deployments.
    OtherDeployment,
    /// No rule covers the URL.
    NoRule,
    /// The URL was refused by the normalizer.
    Malformed(NormalizeError),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Allowed => f.write_str("allowed by rule"),
            Reason::UnknownMethod => f.write_str("unknown HTTP method"),
            Reason::MethodNotAllowed => f.write_str("method not allowed by the matching rule"),
            Reason::OtherDeployment => f.write_str("only rules of another deployment match"),
            Reason::NoRule => f.write_str("no rule matches"),
            Reason::Malformed(error) => write!(f, "refused URL: {error}"),
        }
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Whether the request may be proxied.
    pub allowed: bool,
    /// The rule that decided: the allowing one, or the best covering one that refused the
    /// method or deployment; `None` when no rule covers the URL.
    pub rule: Option<&'a Rule>,
    /// Why.
    pub reason: Reason,
    /// The URL to forward when allowed (its canonical form, never the original).
    pub url: Option<NormalizedUrl>,
}

impl AllowList {
    /// An empty list with the factory default methods and no default deployment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds rules (automatic or editable) after those already present.
    pub fn extend(&mut self, rules: impl IntoIterator<Item = Rule>) {
        self.rules.extend(rules);
    }

    /// Replaces the default methods; every rule on [`AllowedMethods::Defaults`] follows.
    pub fn set_default_methods(&mut self, methods: MethodSet) {
        self.default_methods = methods;
    }

    /// The deployment a request or test without one is judged in.
    pub fn set_default_deployment(&mut self, deployment: Option<String>) {
        self.default_deployment = deployment;
    }

    /// The rules, automatic and editable, in the order added.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The editable rules only.
    pub fn editable_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.origin == Origin::Editable)
    }

    /// The methods `rule` allows under the current defaults.
    pub fn methods_of(&self, rule: &Rule) -> MethodSet {
        match rule.methods {
            AllowedMethods::Defaults => self.default_methods,
            AllowedMethods::Chosen(set) => set,
        }
    }

    /// Judges one request. `deployment` is the user's; `None` means the default deployment.
    pub fn decide(&self, deployment: Option<&str>, method: &str, url: &str) -> Decision<'_> {
        let url = match NormalizedUrl::parse(url) {
            Ok(url) => url,
            Err(error) => return denied(None, Reason::Malformed(error), None),
        };
        let Some(method) = Method::from_request(method) else {
            return denied(None, Reason::UnknownMethod, Some(url));
        };
        self.decide_normalized(deployment, method, url)
    }

    /// Judges a request whose URL is already normalized.
    pub fn decide_normalized(
        &self,
        deployment: Option<&str>,
        method: Method,
        url: NormalizedUrl,
    ) -> Decision<'_> {
        let deployment = deployment.or(self.default_deployment.as_deref());
        let mut covering: Vec<&Rule> = self.rules.iter().filter(|r| r.covers(&url)).collect();
        // Most specific first: exact before prefix, longer prefix before shorter.
        covering.sort_by_key(|r| {
            (
                r.match_type == MatchType::Prefix,
                std::cmp::Reverse(r.url.path.len()),
            )
        });
        let in_deployment: Vec<&Rule> = covering
            .iter()
            .copied()
            .filter(|r| r.applies_in(deployment))
            .collect();
        if let Some(rule) = in_deployment
            .iter()
            .find(|r| self.methods_of(r).contains(method))
        {
            return Decision {
                allowed: true,
                rule: Some(rule),
                reason: Reason::Allowed,
                url: Some(url),
            };
        }
        match (in_deployment.first(), covering.first()) {
            (Some(rule), _) => denied(Some(rule), Reason::MethodNotAllowed, Some(url)),
            (None, Some(rule)) => denied(Some(rule), Reason::OtherDeployment, Some(url)),
            (None, None) => denied(None, Reason::NoRule, Some(url)),
        }
    }
}

fn denied(rule: Option<&Rule>, reason: Reason, url: Option<NormalizedUrl>) -> Decision<'_> {
    Decision {
        allowed: false,
        rule,
        reason,
        url,
    }
}

/// Decisions counted by reason: plain data the caller exports as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests allowed by an automatic rule.
    pub allowed_automatic: u64,
    /// Requests allowed by an editable rule.
    pub allowed_editable: u64,
    /// Denied: unknown method token.
    pub denied_unknown_method: u64,
    /// Denied: the covering rule does not allow the method.
    pub denied_method: u64,
    /// Denied: only another deployment's rules cover the URL.
    pub denied_other_deployment: u64,
    /// Denied: no rule covers the URL.
    pub denied_no_rule: u64,
    /// Denied: the normalizer refused the URL.
    pub denied_malformed: u64,
}

impl Counters {
    /// Counts one decision.
    pub fn record(&mut self, decision: &Decision<'_>) {
        let counter = match decision.reason {
            Reason::Allowed => match decision.rule.map(|r| &r.origin) {
                Some(Origin::Automatic { .. }) => &mut self.allowed_automatic,
                _ => &mut self.allowed_editable,
            },
            Reason::UnknownMethod => &mut self.denied_unknown_method,
            Reason::MethodNotAllowed => &mut self.denied_method,
            Reason::OtherDeployment => &mut self.denied_other_deployment,
            Reason::NoRule => &mut self.denied_no_rule,
            Reason::Malformed(_) => &mut self.denied_malformed,
        };
        *counter += 1;
    }

    /// All denials together.
    pub fn denied(&self) -> u64 {
        self.denied_unknown_method
            + self.denied_method
            + self.denied_other_deployment
            + self.denied_no_rule
            + self.denied_malformed
    }
}
