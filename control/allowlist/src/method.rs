//! HTTP methods a rule can allow, and sets of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A method the allow list can let through. CONNECT and TRACE are not among them: the core
/// never tunnels or echoes, so no rule may allow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// PATCH
    Patch,
    /// PROPFIND (WebDAV)
    Propfind,
    /// PROPPATCH (WebDAV)
    Proppatch,
    /// MKCOL (WebDAV)
    Mkcol,
    /// COPY (WebDAV)
    Copy,
    /// MOVE (WebDAV)
    Move,
    /// LOCK (WebDAV)
    Lock,
    /// UNLOCK (WebDAV)
    Unlock,
}

impl Method {
    /// Every method, in display order.
    pub const ALL: [Method; 14] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Options,
        Method::Patch,
        Method::Propfind,
        Method::Proppatch,
        Method::Mkcol,
        Method::Copy,
        Method::Move,
        Method::Lock,
        Method::Unlock,
    ];

    /// The method's token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Propfind => "PROPFIND",
            Method::Proppatch => "PROPPATCH",
            Method::Mkcol => "MKCOL",
            Method::Copy => "COPY",
            Method::Move => "MOVE",
            Method::Lock => "LOCK",
            Method::Unlock => "UNLOCK",
        }
    }

    /// The method of a request: exact, case-sensitive token (RFC 9110 §9.1).
    pub fn from_request(token: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == token)
    }

    /// A method named in a CSV file: surrounding spaces and letter case are forgiven.
    pub fn from_csv(token: &str) -> Option<Method> {
        let token = token.trim();
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(token))
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of methods (a bit per [`Method`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<Method>", from = "Vec<Method>")]
pub struct MethodSet(u16);

impl MethodSet {
    /// No method at all (the guide's most secure default set).
    pub const EMPTY: MethodSet = MethodSet(0);

    /// The set holding `methods`.
    pub fn of(methods: &[Method]) -> MethodSet {
        methods.iter().fold(MethodSet::EMPTY, |set, m| set.with(*m))
    }

    /// This set plus `method`.
    pub fn with(self, method: Method) -> MethodSet {
        MethodSet(self.0 | method.bit())
    }

    /// Whether `method` is in the set.
    pub fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The methods in display order.
    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |m| self.contains(*m))
    }
}

impl From<MethodSet> for Vec<Method> {
    fn from(set: MethodSet) -> Self {
        set.iter().collect()
    }
}

impl From<Vec<Method>> for MethodSet {
    fn from(methods: Vec<Method>) -> Self {
        MethodSet::of(&methods)
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for method in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(method.as_str())?;
            first = false;
        }
        Ok(())
    }
}
