//! Parameter lists: `;name=value` on header values (generic-param) and URIs (uri-parameter).

use crate::text::{is_token, is_token_char, parse_quoted, split_top_level, trim_wsp};
use std::fmt;

/// One parameter: a name and an optional value.
///
/// For header parameters the value is kept as written (a quoted string keeps its quotes,
/// see [`Params::get_unquoted`]); for URI parameters it is %-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name as written (compare with `eq_ignore_ascii_case`).
    pub name: String,
    /// Value, absent for a flag parameter such as `;lr`.
    pub value: Option<String>,
}

/// An ordered parameter list with case-insensitive lookup by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// An empty list.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The parameter called `name`, if present.
    pub fn find(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// `true` when a parameter called `name` is present (with or without value).
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The value of `name` as written; `None` if absent or valueless.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).and_then(|p| p.value.as_deref())
    }

    /// The value of `name` with surrounding quotes removed and escapes decoded.
    pub fn get_unquoted(&self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        if v.starts_with('"') {
            parse_quoted(v).ok().map(|(s, _)| s)
        } else {
            Some(v.to_owned())
        }
    }

    /// Sets `name` to `value`, replacing an existing parameter of that name in place.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.0.push(Param {
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Removes every parameter called `name`; returns whether one was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
        before != self.0.len()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the parameters in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.0.iter()
    }

    /// Parses header parameters: `s` is empty or starts with `;` (after optional LWS).
    pub(crate) fn parse_header(s: &str) -> Result<Self, &'static str> {
        let s = trim_wsp(s);
        if s.is_empty() {
            return Ok(Self::new());
        }
        let Some(rest) = s.strip_prefix(';') else {
            return Err("expected ';' before parameters");
        };
        let mut out = Vec::new();
        for part in split_top_level(rest, ';', false)? {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (trim_wsp(n), Some(trim_wsp(v))),
                None => (part, None),
            };
            if !is_token(name) {
                return Err("parameter name is not a token");
            }
            if let Some(v) = value {
                check_gen_value(v)?;
            }
            out.push(Param {
                name: name.to_owned(),
                value: value.map(str::to_owned),
            });
        }
        Ok(Self(out))
    }
}

/// gen-value = token / host / quoted-string.
fn check_gen_value(v: &str) -> Result<(), &'static str> {
    if v.starts_with('"') {
        let (_, rest) = parse_quoted(v)?;
        if !rest.is_empty() {
            return Err("text after quoted parameter value");
        }
        return Ok(());
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if inner.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(());
        }
        return Err("bad IPv6 reference in parameter value");
    }
    if v.is_empty() || !v.chars().all(is_token_char) {
        return Err("parameter value is not a token, host or quoted string");
    }
    Ok(())
}

impl fmt::Display for Params {
    /// Writes `;name=value` for each parameter (header-parameter form, values as stored).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match &p.value {
                Some(v) => write!(f, ";{}={}", p.name, v)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_lws_and_flags() {
        let p = Params::parse_header(" ; newparam =  newvalue ; secondparam ; q = 0.33").unwrap();
        assert_eq!(p.get("newparam"), Some("newvalue"));
        assert!(p.contains("secondparam"));
        assert_eq!(p.get("secondparam"), None);
        assert_eq!(p.get("Q"), Some("0.33"));
        assert_eq!(p.to_string(), ";newparam=newvalue;secondparam;q=0.33");
    }

    #[test]
    fn quoted_values_and_errors() {
        let p = Params::parse_header(r#";a="x;y\"z""#).unwrap();
        assert_eq!(p.get_unquoted("a").as_deref(), Some("x;y\"z"));
        assert!(Params::parse_header(";;").is_err());
        assert!(Params::parse_header(";a=").is_err());
        assert!(Params::parse_header("a=1").is_err());
        assert!(Params::parse_header(";a=b c").is_err());
        assert!(Params::parse_header(";maddr=[::1]").is_ok());
    }
}
