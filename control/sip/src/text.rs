//! Lexical helpers shared by the header, URI and SDP parsers (RFC 3261 §25.1).
//!
//! Everything here works on `&str` header values that the message parser has already
//! unfolded (no CR or LF left) and returns `Result<_, &'static str>` reasons that the
//! callers wrap into their layer's error with the header name.

use std::fmt::Write as _;

/// `token` characters (RFC 3261 §25.1).
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// `true` when `s` is a non-empty token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// `word` characters (Call-ID): token characters plus a set of separators.
pub(crate) fn is_word_char(c: char) -> bool {
    is_token_char(c)
        || matches!(
            c,
            '(' | ')' | '<' | '>' | ':' | '\\' | '"' | '/' | '[' | ']' | '?' | '{' | '}'
        )
}

/// Linear white space inside an unfolded value.
pub(crate) fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Trims SP and HTAB on both ends.
pub(crate) fn trim_wsp(s: &str) -> &str {
    s.trim_matches(is_wsp)
}

/// Splits `s` on `sep` where it is outside quoted strings and angle brackets.
///
/// Backslash escapes inside quoted strings are honoured. Fails on an unterminated quoted
/// string or unbalanced angle brackets. Elements are returned trimmed; an empty element
/// is an error when `allow_empty` is false.
pub(crate) fn split_top_level(
    s: &str,
    sep: char,
    allow_empty: bool,
) -> Result<Vec<&str>, &'static str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut escaped = false;
    let mut angle = 0usize;
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '<' => angle += 1,
            '>' => {
                angle = angle.checked_sub(1).ok_or("unbalanced '>'")?;
            }
            c if c == sep && angle == 0 => {
                let part = trim_wsp(&s[start..i]);
                if part.is_empty() && !allow_empty {
                    return Err("empty element in list");
                }
                out.push(part);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_quote {
        return Err("unterminated quoted string");
    }
    if angle != 0 {
        return Err("unbalanced '<'");
    }
    let part = trim_wsp(&s[start..]);
    if part.is_empty() && !allow_empty {
        return Err("empty element in list");
    }
    out.push(part);
    Ok(out)
}

/// Parses a quoted string at the start of `s` (which must begin with `"`).
///
/// Returns the unescaped content and the rest of the input after the closing quote.
pub(crate) fn parse_quoted(s: &str) -> Result<(String, &str), &'static str> {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, '"')) => {}
        _ => return Err("expected a quoted string"),
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                Some((_, e)) if e.is_ascii() && e != '\r' && e != '\n' => out.push(e),
                _ => return Err("bad escape in quoted string"),
            },
            c if c.is_control() && c != '\t' => {
                return Err("control character in quoted string");
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string")
}

/// Writes `s` as a quoted string, escaping `"` and `\` (and control characters, which
/// only a quoted-pair can carry).
pub(crate) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' || (c.is_ascii_control() && c != '\t') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Value of a hex digit.
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%HH` escapes. `allowed` says which unescaped characters may appear.
pub(crate) fn unescape(s: &str, allowed: fn(char) -> bool) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err("bad %-escape"),
            }
            i += 3;
        } else {
            // Multi-byte UTF-8 is never allowed unescaped in URIs.
            if !b.is_ascii() || !allowed(b as char) {
                return Err("character not allowed here");
            }
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escape decodes to invalid UTF-8")
}

/// Encodes every byte of `s` that `allowed` refuses as `%HH`.
pub(crate) fn escape_into(out: &mut String, s: &str, allowed: fn(char) -> bool) {
    for c in s.chars() {
        if c.is_ascii() && allowed(c) && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

/// Parses an unsigned decimal with at most `max` value; leading zeros allowed.
pub(crate) fn parse_decimal(s: &str, max: u64) -> Result<u64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number");
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or("number out of range")?;
        if v > max {
            return Err("number out of range");
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_brackets() {
        let parts = split_top_level(r#""a, \"b\"" <sip:x@y;p=1,2>, <sip:z>"#, ',', false).unwrap();
        assert_eq!(parts, vec![r#""a, \"b\"" <sip:x@y;p=1,2>"#, "<sip:z>"]);
        assert!(split_top_level("a,,b", ',', false).is_err());
        assert!(split_top_level("\"open", ',', false).is_err());
        assert!(split_top_level("<a", ',', false).is_err());
    }

    #[test]
    fn quoted_strings_unescape() {
        let (s, rest) = parse_quoted(r#""J Rosenberg \\\"" <sip:x>"#).unwrap();
        assert_eq!(s, "J Rosenberg \\\"");
        assert_eq!(rest, " <sip:x>");
        let mut out = String::new();
        write_quoted(&mut out, &s);
        assert_eq!(parse_quoted(&out).unwrap().0, s);
    }

    #[test]
    fn escapes_round_trip() {
        let s = unescape("sips%3Auser%40example.com", |c| {
            c.is_ascii_alphanumeric() || c == '.'
        })
        .unwrap();
        assert_eq!(s, "sips:user@example.com");
        let mut out = String::new();
        escape_into(&mut out, "a b%\0", |c| c.is_ascii_alphanumeric());
        assert_eq!(out, "a%20b%25%00");
        assert!(unescape("%4", |_| true).is_err());
    }

    #[test]
    fn decimals_are_bounded() {
        assert_eq!(parse_decimal("0068", 255), Ok(68));
        assert!(parse_decimal("300", 255).is_err());
        assert!(parse_decimal("-1", 255).is_err());
        assert!(parse_decimal("36893488147419103232", u64::from(u32::MAX)).is_err());
    }
}
