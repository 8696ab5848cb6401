//! The URL normalizer on URLs assembled from pieces that matter (encodings, dot segments,
//! slashes, backslashes, ports, userinfo) and on raw text. Beyond "never panics" it checks
//! what the allow list relies on: the canonical form is a fixed point (normalizing it again
//! gives the same URL), has no dot segments or empty segments, and a prefix rule on
//! `/cucm-uds/` allows only canonical paths that really start with `/cucm-uds/`.
#![no_main]

use arbitrary::Arbitrary;
use edgeway_allowlist::{
    AllowList, AllowedMethods, MatchType, Method, MethodSet, NormalizedUrl, Origin, Rule,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Piece {
    Slash,
    Dot,
    DotDot,
    Text(u8),
    Escape(u8),
    Backslash,
    Semicolon,
    Question,
    Hash,
    Raw(char),
}

#[derive(Debug, Arbitrary)]
struct Input {
    upper_scheme: bool,
    https: bool,
    host: u8,
    port: Option<u32>,
    userinfo: bool,
    path: Vec<Piece>,
    raw: String,
}

const HOSTS: [&str; 6] = [
    "cucm.example.com",
    "CUCM.Example.Com",
    "cucm.example.com.",
    "10.0.0.1",
    "[::1]",
    "127.1",
];
const TEXT: [&str; 8] = [
    "cucm-uds", "CUCM-UDS", "admin", "users", "a", "..;", "%2e", "%252e",
];

fn assemble(input: &Input) -> String {
    let mut url = String::new();
    url.push_str(match (input.https, input.upper_scheme) {
        (true, false) => "https://",
        (true, true) => "HTTPS://",
        (false, false) => "http://",
        (false, true) => "HtTp://",
    });
    if input.userinfo {
        url.push_str("user@");
    }
    url.push_str(HOSTS[usize::from(input.host) % HOSTS.len()]);
    if let Some(port) = input.port {
        url.push_str(&format!(":{}", port % 70_000));
    }
    for piece in &input.path {
        match piece {
            Piece::Slash => url.push('/'),
            Piece::Dot => url.push('.'),
            Piece::DotDot => url.push_str(".."),
            Piece::Text(i) => url.push_str(TEXT[usize::from(*i) % TEXT.len()]),
            Piece::Escape(b) => url.push_str(&format!("%{b:02x}")),
            Piece::Backslash => url.push('\\'),
            Piece::Semicolon => url.push(';'),
            Piece::Question => url.push('?'),
            Piece::Hash => url.push('#'),
            Piece::Raw(c) => url.push(*c),
        }
    }
    url
}

fn check(list: &AllowList, url: &str) {
    let Ok(normalized) = NormalizedUrl::parse(url) else {
        assert!(!list.decide(None, "GET", url).allowed);
        return;
    };
    let text = normalized.to_string();
    assert_eq!(
        NormalizedUrl::parse(&text).as_ref(),
        Ok(&normalized),
        "{url} -> {text}"
    );
    let path = &normalized.path;
    assert!(path.starts_with('/'));
    assert!(!path.contains("//"), "{url} -> {path}");
    for segment in path.split('/') {
        assert!(segment != "." && segment != "..", "{url} -> {path}");
    }
    let decision = list.decide(None, "GET", url);
    if decision.allowed {
        assert!(path.starts_with("/cucm-uds/"), "{url} escaped to {path}");
        assert_eq!(decision.url.as_ref(), Some(&normalized));
    }
}

fuzz_target!(|input: Input| {
    let mut list = AllowList::new();
    list.extend([Rule {
        url: NormalizedUrl::parse("https://cucm.example.com:8443/cucm-uds/").expect("rule"),
        match_type: MatchType::Prefix,
        methods: AllowedMethods::Chosen(MethodSet::of(&[Method::Get])),
        deployment: None,
        description: String::new(),
        origin: Origin::Editable,
    }]);
    check(&list, &assemble(&input));
    check(&list, &input.raw);
});
