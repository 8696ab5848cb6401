//! RFC 4475 torture tests: every message of §3 in `tests/data/rfc4475/`, with what the
//! parser must do with it. Accepted messages must also survive serialize → parse.
#![allow(clippy::unwrap_used)]

use edgeway_sip::sdp::SessionDescription;
use edgeway_sip::{
    ContactList, HeaderName, Host, Message, Method, ParseError, Request, Response,
    TransactionConfig, TransactionError, TransactionLayer, Uri,
};
use std::path::Path;
use std::time::Instant;

type Check = fn(&Message);

enum Expect {
    /// Must parse; the function checks a few values.
    Accept(Check),
    /// Must be refused with a matching error.
    Refuse(fn(&ParseError) -> bool),
}

fn req(m: &Message) -> &Request {
    match m {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    }
}

fn resp(m: &Message) -> &Response {
    match m {
        Message::Response(r) => r,
        Message::Request(_) => panic!("expected a response"),
    }
}

fn sip_user(u: &Uri) -> Option<&str> {
    u.as_sip().and_then(|s| s.user.as_deref())
}

fn bad_header(e: &ParseError, name: &str) -> bool {
    matches!(e, ParseError::BadHeader { name: n, .. } if n == name)
}

fn cases() -> Vec<(&'static str, Expect)> {
    use Expect::{Accept, Refuse};
    vec![
        // 3.1.1 Valid messages.
        (
            "wsinv",
            Accept(|m| {
                let r = req(m);
                let h = &r.headers;
                assert_eq!(r.method, Method::Invite);
                let ruri = r.uri.as_sip().unwrap();
                assert_eq!(ruri.user.as_deref(), Some("vivekg"));
                assert!(ruri.params.contains("unknownparam"));
                assert_eq!(h.to_addr().unwrap().tag(), Some("1918181833n"));
                let from = h.from_addr().unwrap();
                assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
                assert_eq!(from.tag(), Some("98asjd8"));
                assert_eq!(h.max_forwards().unwrap(), Some(68));
                assert_eq!(h.cseq().unwrap().to_string(), "9 INVITE");
                let via = h.via().unwrap();
                assert_eq!(via.len(), 3);
                assert_eq!(
                    (via[0].transport.as_str(), via[0].branch()),
                    ("UDP", Some("390skdjuw"))
                );
                assert_eq!(via[1].host, Host::Domain("spindle.example.com".into()));
                assert_eq!(
                    (via[1].transport.as_str(), via[1].branch()),
                    ("TCP", Some("z9hG4bK9ikj8"))
                );
                assert_eq!(via[2].branch(), Some("z9hG4bK30239"));
                assert_eq!(h.first(&HeaderName::Subject), Some(""));
                assert_eq!(
                    h.first(&"newfangledheader".into()),
                    Some("newfangled value continued newfangled value")
                );
                assert_eq!(
                    h.first(&"UnknownHeaderWithUnusualValue".into()),
                    Some(";;,,;;,;")
                );
                let ContactList::Addresses(c) = h.contacts().unwrap() else {
                    panic!()
                };
                assert_eq!(c[0].display_name.as_deref(), Some("Quoted string \"\""));
                assert_eq!(c[0].params.get("newparam"), Some("newvalue"));
                assert!(c[0].params.contains("secondparam"));
                assert_eq!(c[0].q(), Some(330));
                assert!(h.routes().unwrap()[0]
                    .uri
                    .as_sip()
                    .unwrap()
                    .is_loose_route());
                assert_eq!(r.body.len(), 150);
            }),
        ),
        (
            "intmeth",
            Accept(|m| {
                let r = req(m);
                assert_eq!(
                    r.method,
                    Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into())
                );
                let u = r.uri.as_sip().unwrap();
                assert_eq!(
                    u.user.as_deref(),
                    Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
                );
                assert_eq!(
                    u.password.as_deref(),
                    Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
                );
                let to = r.headers.to_addr().unwrap();
                assert_eq!(to.display_name.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
                let from = r.headers.from_addr().unwrap();
                assert_eq!(
                    from.display_name.as_deref(),
                    Some("token1~` token2'+_ token3*%!.-")
                );
                assert_eq!(
                    from.params.get_unquoted("fromParam''~+*_!.-%").as_deref(),
                    Some("работающий")
                );
                assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
                assert_eq!(
                    r.headers.call_id().unwrap(),
                    "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
                );
                assert_eq!(
                    r.headers.top_via().unwrap().branch(),
                    Some("z9hG4bK-.!%66*_+`'~")
                );
                assert_eq!(
                    r.headers.first(&"extensionHeader-!.%*+_`'~".into()),
                    Some("\u{feff}大停電")
                );
                assert_eq!(r.headers.max_forwards().unwrap(), Some(255));
            }),
        ),
        (
            "esc01",
            Accept(|m| {
                let r = req(m);
                assert_eq!(sip_user(&r.uri), Some("sips:user@example.com"));
                assert_eq!(
                    r.uri.as_sip().unwrap().host,
                    Host::Domain("example.net".into())
                );
                assert_eq!(sip_user(&r.headers.to_addr().unwrap().uri), Some("user"));
                assert_eq!(
                    sip_user(&r.headers.from_addr().unwrap().uri),
                    Some("I have spaces")
                );
                let ContactList::Addresses(c) = r.headers.contacts().unwrap() else {
                    panic!()
                };
                let cu = c[0].uri.as_sip().unwrap();
                assert_eq!(cu.user.as_deref(), Some("caller"));
                assert!(cu.params.contains("lr"));
                assert_eq!(cu.params.get("name"), Some("value%41"));
                assert_eq!(
                    r.headers.call_id().unwrap(),
                    "esc01.239409asdfakjkn23onasd0-3234"
                );
                assert!(r.headers.content_type().unwrap().unwrap().is_sdp());
            }),
        ),
        (
            "escnull",
            Accept(|m| {
                let r = req(m);
                assert_eq!(
                    sip_user(&r.headers.to_addr().unwrap().uri),
                    Some("null-\0-null")
                );
                let ContactList::Addresses(c) = r.headers.contacts().unwrap() else {
                    panic!()
                };
                assert_eq!(c.len(), 2);
                assert_eq!(sip_user(&c[0].uri), Some("\0"));
                assert_eq!(sip_user(&c[1].uri), Some("\0\0"));
            }),
        ),
        (
            "esc02",
            Accept(|m| {
                let r = req(m);
                assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
                assert_eq!(
                    r.headers.to_addr().unwrap().display_name.as_deref(),
                    Some("%Z%45")
                );
                let ContactList::Addresses(c) = r.headers.contacts().unwrap() else {
                    panic!()
                };
                assert_eq!(c.len(), 2);
                assert_eq!(
                    r.headers.first(&"C%6Fntact".into()),
                    Some("<sip:alias2@host2.example.com>")
                );
                assert_eq!(
                    r.headers.top_via().unwrap().branch(),
                    Some("z9hG4bK209%fzsnel234")
                );
            }),
        ),
        (
            "lwsdisp",
            Accept(|m| {
                let from = req(m).headers.from_addr().unwrap();
                assert_eq!(from.display_name.as_deref(), Some("caller"));
                assert_eq!(from.tag(), Some("323"));
            }),
        ),
        (
            "longreq",
            Accept(|m| {
                let r = req(m);
                let via = r.headers.via().unwrap();
                assert_eq!(via.len(), 34);
                assert_eq!(via[0].host, Host::Domain("sip33.example.com".into()));
                assert_eq!(via[33].received(), Some("192.0.2.5".parse().unwrap()));
                let to = r.headers.to_addr().unwrap();
                let tu = to.uri.as_sip().unwrap();
                assert_eq!(tu.port, Some(6000));
                assert_eq!(tu.params.len(), 3);
                assert!(r
                    .headers
                    .from_addr()
                    .unwrap()
                    .tag()
                    .unwrap()
                    .ends_with("982424"));
                assert_eq!(r.headers.from_addr().unwrap().params.len(), 3);
                assert_eq!(r.body.len(), 150);
            }),
        ),
        (
            "dblreq",
            Accept(|m| {
                let r = req(m);
                assert_eq!(r.method, Method::Register);
                assert!(r.body.is_empty(), "the trailing INVITE is noise");
                assert_eq!(
                    r.headers.call_id().unwrap(),
                    "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
                );
            }),
        ),
        (
            "semiuri",
            Accept(|m| {
                let r = req(m);
                assert_eq!(sip_user(&r.uri), Some("user;par=u@example.net"));
                assert!(r.uri.as_sip().unwrap().params.is_empty());
                assert_eq!(r.headers.values(&HeaderName::Accept).unwrap().len(), 6);
            }),
        ),
        (
            "transports",
            Accept(|m| {
                let t: Vec<String> = req(m)
                    .headers
                    .via()
                    .unwrap()
                    .into_iter()
                    .map(|v| v.transport)
                    .collect();
                assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
            }),
        ),
        (
            "mpart01",
            Accept(|m| {
                let r = req(m);
                assert_eq!(r.method, Method::Message);
                assert_eq!(r.body.len(), 553);
                assert!(r.body.contains(&0));
                let via = r.headers.top_via().unwrap();
                assert_eq!((via.port, via.rport()), (Some(5070), Some(None)));
                let ct = r.headers.content_type().unwrap().unwrap();
                assert_eq!(ct.params.get("boundary"), Some("7a9cbec02ceef655"));
                assert_eq!(
                    r.headers.routes().unwrap()[0].uri.as_sip().unwrap().port,
                    Some(5080)
                );
            }),
        ),
        (
            "unreason",
            Accept(|m| {
                let r = resp(m);
                assert_eq!(r.status, 200);
                assert_eq!(r.reason, "= 2**3 * 5**2 но сто девяносто девять - простое");
                assert_eq!(r.body.len(), 154);
            }),
        ),
        (
            "noreason",
            Accept(|m| {
                let r = resp(m);
                assert_eq!((r.status, r.reason.as_str()), (100, ""));
            }),
        ),
        // 3.1.2 Invalid messages.
        ("badinv01", Refuse(|e| bad_header(e, "Via"))),
        (
            "clerr",
            Refuse(|e| {
                matches!(
                    e,
                    ParseError::ContentLengthExceedsBody { declared: 9999, .. }
                )
            }),
        ),
        (
            "ncl",
            Refuse(|e| matches!(e, ParseError::BadContentLength(v) if v == "-999")),
        ),
        ("scalar02", Refuse(|e| bad_header(e, "CSeq"))),
        ("scalarlg", Refuse(|e| bad_header(e, "CSeq"))),
        ("quotbal", Refuse(|e| bad_header(e, "To"))),
        (
            "ltgtruri",
            Refuse(|e| matches!(e, ParseError::BadRequestUri { .. })),
        ),
        (
            "lwsruri",
            Refuse(|e| matches!(e, ParseError::BadStartLine { .. })),
        ),
        (
            "lwsstart",
            Refuse(|e| matches!(e, ParseError::BadStartLine { .. })),
        ),
        (
            "trws",
            Refuse(|e| matches!(e, ParseError::BadStartLine { .. })),
        ),
        (
            "escruri",
            Refuse(
                |e| matches!(e, ParseError::BadRequestUri { reason, .. } if reason.contains("headers")),
            ),
        ),
        ("baddate", Refuse(|e| bad_header(e, "Date"))),
        ("regbadct", Refuse(|e| bad_header(e, "Contact"))),
        ("badaspec", Refuse(|e| bad_header(e, "To"))),
        ("baddn", Refuse(|e| bad_header(e, "From"))),
        (
            "badvers",
            Refuse(|e| {
                matches!(e, ParseError::UnsupportedVersion(v) if v == "SIP/7.0")
                    && e.status_code() == 505
            }),
        ),
        (
            "mismatch01",
            Refuse(
                |e| matches!(e, ParseError::CSeqMismatch { method, cseq } if method == "OPTIONS" && cseq == "INVITE"),
            ),
        ),
        (
            "mismatch02",
            Refuse(
                |e| matches!(e, ParseError::CSeqMismatch { method, .. } if method == "NEWMETHOD"),
            ),
        ),
        (
            "bigcode",
            Refuse(|e| matches!(e, ParseError::BadStatusCode(c) if c == "4294967301")),
        ),
        // 3.2 Transaction layer semantics: syntactically valid (refused by the
        // transaction layer, see `badbranch_is_refused_by_transactions`).
        (
            "badbranch",
            Accept(|m| {
                assert_eq!(req(m).headers.top_via().unwrap().branch(), Some("z9hG4bK"));
            }),
        ),
        // 3.3 Application layer semantics.
        ("insuf", Refuse(|e| *e == ParseError::MissingHeader("To"))),
        (
            "unkscm",
            Accept(|m| {
                let Uri::Other(u) = &req(m).uri else { panic!() };
                assert_eq!(
                    (u.scheme.as_str(), u.rest.as_str()),
                    ("nobodyknowsthisscheme", "totallyopaquecontent")
                );
            }),
        ),
        (
            "novelsc",
            Accept(|m| {
                let Uri::Other(u) = &req(m).uri else { panic!() };
                assert_eq!(u.scheme, "soap.beep");
            }),
        ),
        (
            "unksm2",
            Accept(|m| {
                let h = &req(m).headers;
                assert!(matches!(&h.to_addr().unwrap().uri, Uri::Other(u) if u.scheme == "isbn"));
                assert!(matches!(&h.from_addr().unwrap().uri, Uri::Other(u) if u.scheme == "http"));
                let ContactList::Addresses(c) = h.contacts().unwrap() else {
                    panic!()
                };
                assert!(matches!(&c[0].uri, Uri::Other(u) if u.rest == "John_Smith"));
            }),
        ),
        (
            "bext01",
            Accept(|m| {
                let h = &req(m).headers;
                assert_eq!(
                    h.require().unwrap(),
                    ["nothingSupportsThis", "nothingSupportsThisEither"]
                );
                assert_eq!(h.values(&HeaderName::ProxyRequire).unwrap().len(), 2);
            }),
        ),
        (
            "invut",
            Accept(|m| {
                let r = req(m);
                assert_eq!(
                    r.headers.content_type().unwrap().unwrap().subtype,
                    "unknownformat"
                );
                assert_eq!(r.body.len(), 40);
            }),
        ),
        (
            "regaut01",
            Accept(|m| {
                let a = req(m).headers.auth(&HeaderName::Authorization).unwrap();
                assert_eq!(a[0].scheme, "NoOneKnowsThisScheme");
                assert_eq!(a[0].param("opaque-data"), Some("here"));
            }),
        ),
        (
            "multi01",
            Refuse(|e| *e == ParseError::DuplicateHeader("CSeq".into())),
        ),
        (
            "mcl01",
            Refuse(|e| *e == ParseError::DuplicateHeader("Content-Length".into())),
        ),
        (
            "bcast",
            Accept(|m| {
                assert_eq!(resp(m).headers.via().unwrap().len(), 2);
            }),
        ),
        (
            "zeromf",
            Accept(|m| {
                assert_eq!(req(m).headers.max_forwards().unwrap(), Some(0));
            }),
        ),
        (
            "cparam01",
            Accept(|m| {
                let ContactList::Addresses(c) = req(m).headers.contacts().unwrap() else {
                    panic!()
                };
                assert!(c[0].params.contains("unknownparam"));
                assert!(c[0].uri.as_sip().unwrap().params.is_empty());
            }),
        ),
        (
            "cparam02",
            Accept(|m| {
                let ContactList::Addresses(c) = req(m).headers.contacts().unwrap() else {
                    panic!()
                };
                assert!(c[0].params.is_empty());
                assert!(c[0].uri.as_sip().unwrap().params.contains("unknownparam"));
            }),
        ),
        (
            "regescrt",
            Accept(|m| {
                let ContactList::Addresses(c) = req(m).headers.contacts().unwrap() else {
                    panic!()
                };
                assert_eq!(
                    c[0].uri.as_sip().unwrap().headers,
                    vec![("Route".to_string(), "<sip:sip.example.com>".to_string())]
                );
            }),
        ),
        (
            "sdp01",
            Accept(|m| {
                let sdp = SessionDescription::parse(&req(m).body).unwrap();
                assert_eq!(sdp.media().len(), 2);
            }),
        ),
        // 3.4 Backwards compatibility: RFC 2543 syntax. Refused on purpose: this stack
        // requires Max-Forwards (RFC 3261 §8.1.1) and RFC 3261 branches.
        (
            "inv2543",
            Refuse(|e| *e == ParseError::MissingHeader("Max-Forwards")),
        ),
    ]
}

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475"))
}

#[test]
fn rfc4475_torture_messages() {
    let cases = cases();
    let mut on_disk: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".dat").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = cases.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every data file has exactly one expectation"
    );
    assert_eq!(listed.len(), 49, "RFC 4475 has 49 messages");

    for (name, expect) in &cases {
        let bytes = std::fs::read(data_dir().join(format!("{name}.dat"))).unwrap();
        assert!(
            bytes
                .windows(2)
                .filter(|w| w[1] == b'\n')
                .all(|w| w[0] == b'\r')
                || *name == "mpart01",
            "{name}: stored with bare LF"
        );
        let result = Message::parse(&bytes);
        match (expect, result) {
            (Expect::Accept(check), Ok(m)) => {
                check(&m);
                let again = Message::parse(&m.to_bytes())
                    .unwrap_or_else(|e| panic!("{name}: re-parse failed: {e}"));
                assert_eq!(again, m, "{name}: serialize/parse round trip");
            }
            (Expect::Accept(_), Err(e)) => panic!("{name}: must be accepted, got {e}"),
            (Expect::Refuse(_), Ok(_)) => panic!("{name}: must be refused"),
            (Expect::Refuse(ok), Err(e)) => {
                assert!(ok(&e), "{name}: refused with the wrong error: {e:?}")
            }
        }
    }
}

#[test]
fn badbranch_is_refused_by_transactions() {
    let bytes = std::fs::read(data_dir().join("badbranch.dat")).unwrap();
    let msg = Message::parse(&bytes).unwrap();
    let mut layer: TransactionLayer<u8> = TransactionLayer::new(TransactionConfig::default());
    assert_eq!(
        layer.handle_message(Instant::now(), msg, 1, false),
        Err(TransactionError::NoMagicCookie("z9hG4bK".into()))
    );
}
