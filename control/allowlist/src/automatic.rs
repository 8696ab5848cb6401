//! Automatic inbound rules: generated for every discovered node, never edited by hand.
//!
//! The guide's table 3 names the columns (type, protocol, ports, match type, path, methods)
//! but not the rows. The rows in [`TEMPLATES`] are inferred from the guide's port reference
//! (UDS on Unified CM 8443, IM and Presence SOAP on 8443, configuration files over HTTP 6970
//! or HTTPS 6972, Unity Connection on 443) and from what MRA clients request: UDS under
//! `/cucm-uds/`, the IM and Presence SOAP interface at `/EPASSoap/service/v105`, TFTP files
//! from the root of the TFTP service, voicemail under `/vmrest/`.

use serde::{Deserialize, Serialize};

use crate::method::{Method, MethodSet};
use crate::normalize::{NormalizedUrl, Scheme};
use crate::rule::{AllowedMethods, MatchType, Origin, Rule};
use crate::AllowListError;

/// The node types of table 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Cisco Unified Communications Manager nodes ("Unified CM servers").
    UnifiedCm,
    /// Nodes running the TFTP service ("TFTP").
    Tftp,
    /// Unified CM IM and Presence Service nodes ("IM and Presence Service nodes").
    ImPresence,
    /// Cisco Unity Connection nodes ("Unity Connection servers").
    UnityConnection,
}

impl NodeKind {
    /// The type as table 3 shows it.
    pub fn label(self) -> &'static str {
        match self {
            NodeKind::UnifiedCm => "Unified CM servers",
            NodeKind::Tftp => "TFTP",
            NodeKind::ImPresence => "IM and Presence Service nodes",
            NodeKind::UnityConnection => "Unity Connection servers",
        }
    }
}

/// One row of table 3, before it is given a node's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleTemplate {
    /// The node type the row serves.
    pub kind: NodeKind,
    /// Protocol.
    pub scheme: Scheme,
    /// Port, unless the node names its own for this protocol.
    pub port: u16,
    /// Match type.
    pub match_type: MatchType,
    /// Path.
    pub path: &'static str,
    /// Methods.
    pub methods: &'static [Method],
}

/// The automatic inbound rules per node type (inferred rows; see the module docs).
pub const TEMPLATES: &[RuleTemplate] = &[
    RuleTemplate {
        kind: NodeKind::UnifiedCm,
        scheme: Scheme::Https,
        port: 8443,
        match_type: MatchType::Prefix,
        path: "/cucm-uds/",
        methods: &[Method::Get, Method::Put],
    },
    RuleTemplate {
        kind: NodeKind::Tftp,
        scheme: Scheme::Http,
        port: 6970,
        match_type: MatchType::Prefix,
        path: "/",
        methods: &[Method::Get],
    },
    RuleTemplate {
        kind: NodeKind::Tftp,
        scheme: Scheme::Https,
        port: 6972,
        match_type: MatchType::Prefix,
        path: "/",
        methods: &[Method::Get],
    },
    RuleTemplate {
        kind: NodeKind::ImPresence,
        scheme: Scheme::Https,
        port: 8443,
        match_type: MatchType::Exact,
        path: "/EPASSoap/service/v105",
        methods: &[Method::Post],
    },
    RuleTemplate {
        kind: NodeKind::UnityConnection,
        scheme: Scheme::Https,
        port: 443,
        match_type: MatchType::Prefix,
        path: "/vmrest/",
        methods: &[Method::Get, Method::Put, Method::Post, Method::Delete],
    },
];

/// A discovered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its type.
    pub kind: NodeKind,
    /// Its address as discovery reported it (DNS name or IP address).
    pub host: String,
    /// Port for the HTTP rows, when the node does not use the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Port for the HTTPS rows, when the node does not use the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
}

/// The automatic inbound rules for `nodes`, in node order then template order. A node whose
/// host is not a valid name or address is refused with its index.
pub fn automatic_rules(nodes: &[Node]) -> Result<Vec<Rule>, AllowListError> {
    let mut rules = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        for template in TEMPLATES.iter().filter(|t| t.kind == node.kind) {
            let port = match template.scheme {
                Scheme::Http => node.http_port,
                Scheme::Https => node.https_port,
            }
            .unwrap_or(template.port);
            let text = format!(
                "{}://{}:{}{}",
                template.scheme.as_str(),
                node.host,
                port,
                template.path
            );
            let url = NormalizedUrl::parse(&text).map_err(|source| AllowListError::BadNode {
                index,
                host: node.host.clone(),
                source,
            })?;
            rules.push(Rule {
                url,
                match_type: template.match_type,
                methods: AllowedMethods::Chosen(MethodSet::of(template.methods)),
                deployment: None,
                description: format!("{} {}", node.kind.label(), node.host),
                origin: Origin::Automatic { kind: node.kind },
            });
        }
    }
    Ok(rules)
}
