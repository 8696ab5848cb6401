//! Bencode, the dictionary format of rtpengine's ng control protocol: integers
//! (`i42e`), byte strings (`4:spam`), lists (`l...e`) and dictionaries (`d...e`).
//!
//! Dictionaries are kept in a `BTreeMap`, so encoding is canonical (sorted keys). Decoding
//! accepts unsorted keys, as rtpengine itself sends them, and refuses everything else that
//! is not bencode with a typed [`BencodeError`].

use std::collections::BTreeMap;

/// Nesting deeper than this is refused (no recursion bomb from the network).
pub const MAX_DEPTH: usize = 64;

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e` with byte-string keys.
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why bytes are not a bencoded value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BencodeError {
    /// The input ended inside a value.
    #[error("input ends inside a value at byte {0}")]
    UnexpectedEnd(usize),
    /// A byte that cannot start or continue a value here.
    #[error("unexpected byte {byte:#04x} at {at}")]
    UnexpectedByte {
        /// Offset in the input.
        at: usize,
        /// The byte.
        byte: u8,
    },
    /// An integer that is empty, has a leading zero, `-0`, or overflows i64.
    #[error("invalid integer at byte {0}")]
    BadInt(usize),
    /// A string length that is not a plain decimal or runs past the input.
    #[error("invalid string length at byte {0}")]
    BadLength(usize),
    /// A dictionary key that is not a byte string.
    #[error("dictionary key at byte {0} is not a string")]
    NonStringKey(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes left after a complete value.
    #[error("{0} bytes after the end of the value")]
    TrailingData(usize),
}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A list of byte strings from text.
    pub fn str_list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| Value::str(s)).collect())
    }

    /// A dictionary from (key, value) pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// The bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A byte string as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Dictionary lookup by text key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(items) => {
                out.push(b'l');
                for v in items {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    encode_bytes(k, out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one value occupying all of `input`.
    pub fn decode(input: &[u8]) -> Result<Value, BencodeError> {
        let (v, used) = Value::decode_prefix(input)?;
        if used != input.len() {
            return Err(BencodeError::TrailingData(input.len() - used));
        }
        Ok(v)
    }

    /// Decodes one value from the start of `input`; returns it and the bytes it used.
    pub fn decode_prefix(input: &[u8]) -> Result<(Value, usize), BencodeError> {
        let mut d = Decoder { input, pos: 0 };
        let v = d.value(0)?;
        Ok((v, d.pos))
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::UnexpectedEnd(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        if depth > MAX_DEPTH {
            return Err(BencodeError::TooDeep);
        }
        match self.peek()? {
            b'i' => self.int().map(Value::Int),
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut map = BTreeMap::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(BencodeError::NonStringKey(self.pos));
                    }
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    map.insert(k, v);
                }
                self.pos += 1;
                Ok(Value::Dict(map))
            }
            byte => Err(BencodeError::UnexpectedByte { at: self.pos, byte }),
        }
    }

    fn int(&mut self) -> Result<i64, BencodeError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'e')
            .ok_or(BencodeError::UnexpectedEnd(self.input.len()))?;
        let digits = &rest[..end];
        let body = digits.strip_prefix(b"-").unwrap_or(digits);
        let leading_zero = body.len() > 1 && body[0] == b'0';
        let negative_zero = digits.first() == Some(&b'-') && body == b"0";
        let digits_only = !body.is_empty() && body.iter().all(u8::is_ascii_digit);
        if !digits_only || leading_zero || negative_zero {
            return Err(BencodeError::BadInt(start));
        }
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BencodeError::BadInt(start))?;
        self.pos += end + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, BencodeError> {
        let start = self.pos;
        let rest = &self.input[self.pos..];
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or(BencodeError::UnexpectedEnd(self.input.len()))?;
        let digits = &rest[..colon];
        if digits.is_empty()
            || digits.len() > 10
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(BencodeError::BadLength(start));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BencodeError::BadLength(start))?;
        let body_start = self.pos + colon + 1;
        let body = self
            .input
            .get(body_start..body_start.saturating_add(len))
            .ok_or(BencodeError::BadLength(start))?;
        self.pos = body_start + len;
        Ok(body.to_vec())
    }
}
