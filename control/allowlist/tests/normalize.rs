//! One test per normalization rule (see `edgeway_allowlist::normalize`), then the escape
//! attempts against a prefix rule, each checked for the exact refusal or canonical form.

use edgeway_allowlist::normalize::MAX_URL_LEN;
use edgeway_allowlist::{
    AllowList, AllowedMethods, Counters, MatchType, Method, MethodSet, NormalizeError as E,
    NormalizedUrl, Origin, Reason, Rule,
};

fn canonical(url: &str) -> String {
    NormalizedUrl::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .to_string()
}

fn refused(url: &str) -> E {
    match NormalizedUrl::parse(url) {
        Ok(n) => panic!("{url} was accepted as {n}"),
        Err(e) => e,
    }
}

#[test]
fn length_and_ascii() {
    let long = format!("https://a.example/{}", "a".repeat(MAX_URL_LEN));
    assert_eq!(refused(&long), E::TooLong);
    assert_eq!(refused("https://bücher.example/"), E::NonAscii);
    assert_eq!(refused("https://a.example/café"), E::NonAscii);
}

#[test]
fn scheme() {
    assert_eq!(canonical("HtTpS://a.example/x"), "https://a.example/x");
    assert_eq!(refused("ftp://a.example/"), E::UnsupportedScheme);
    assert_eq!(refused("/cucm-uds/users"), E::NotAbsolute);
    assert_eq!(refused("a.example/x"), E::NotAbsolute);
    assert_eq!(refused("://a.example/"), E::NotAbsolute);
}

#[test]
fn userinfo_and_backslash_in_authority() {
    assert_eq!(refused("https://user:pw@a.example/"), E::Userinfo);
    assert_eq!(refused("https://a.example@evil.example/"), E::Userinfo);
    assert_eq!(refused("https://a.example\\@evil/"), E::Userinfo);
    assert_eq!(refused("https://a.example\\evil/"), E::Backslash);
}

#[test]
fn hosts() {
    assert_eq!(
        canonical("https://CUCM.Example.COM/"),
        "https://cucm.example.com/"
    );
    assert_eq!(
        canonical("https://cucm.example.com./"),
        "https://cucm.example.com/"
    );
    assert_eq!(
        canonical("https://10.0.0.1:8443/"),
        "https://10.0.0.1:8443/"
    );
    assert_eq!(canonical("https://[0:0::1]:8443/"), "https://[::1]:8443/");
    assert_eq!(
        canonical("https://xn--bcher-kva.example/"),
        "https://xn--bcher-kva.example/"
    );
    for bad in [
        "https:///x",
        "https://-a.example/",
        "https://a-.example/",
        "https://a..example/",
        "https://a_b.example/",
        "https://a%2eexample/",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://[::1/",
        "https://[::1]x/",
        "https://[not-v6]/",
    ] {
        assert_eq!(refused(bad), E::InvalidHost, "{bad}");
    }
    let label = "a".repeat(64);
    assert_eq!(
        refused(&format!("https://{label}.example/")),
        E::InvalidHost
    );
}

#[test]
fn ports() {
    assert_eq!(canonical("https://a.example:443/x"), "https://a.example/x");
    assert_eq!(canonical("http://a.example:80/x"), "http://a.example/x");
    assert_eq!(
        canonical("http://a.example:443/x"),
        "http://a.example:443/x"
    );
    assert_eq!(
        canonical("https://a.example:08443/x"),
        "https://a.example:8443/x"
    );
    assert_eq!(
        NormalizedUrl::parse("https://a.example/").map(|u| u.port),
        Ok(443)
    );
    for bad in [
        "https://a.example:/",
        "https://a.example:65536/",
        "https://a.example:44a/",
        "https://a.example:123456/",
    ] {
        assert_eq!(refused(bad), E::InvalidPort, "{bad}");
    }
}

#[test]
fn fragment_and_query() {
    assert_eq!(canonical("https://a.example/x#frag"), "https://a.example/x");
    assert_eq!(
        canonical("https://a.example/x?q=%2F..#f"),
        "https://a.example/x?q=%2F.."
    );
    assert_eq!(canonical("https://a.example?q=1"), "https://a.example/?q=1");
    assert_eq!(refused("https://a.example/x?q=a b"), E::InvalidCharacter);
    assert_eq!(
        refused("https://a.example/x?q=%zz"),
        E::InvalidPercentEncoding
    );
    assert_eq!(refused("https://a.example/x?q=a\\b"), E::Backslash);
}

#[test]
fn percent_encoding() {
    // Unreserved characters are decoded, others kept with upper-case hex.
    assert_eq!(
        canonical("https://a.example/%7Euser/%41%2d"),
        "https://a.example/~user/A-"
    );
    assert_eq!(
        canonical("https://a.example/a%3bb%20c"),
        "https://a.example/a%3Bb%20c"
    );
    assert_eq!(
        canonical("https://a.example/caf%c3%a9"),
        "https://a.example/caf%C3%A9"
    );
    assert_eq!(refused("https://a.example/%2F"), E::EncodedSlash);
    assert_eq!(refused("https://a.example/%5C"), E::Backslash);
    assert_eq!(refused("https://a.example/%00"), E::EncodedNul);
    assert_eq!(refused("https://a.example/%0d%0a"), E::EncodedControl);
    assert_eq!(refused("https://a.example/%7f"), E::EncodedControl);
    assert_eq!(refused("https://a.example/%252e"), E::DoubleEncoding);
    assert_eq!(refused("https://a.example/%252F"), E::DoubleEncoding);
    // Found by the fuzzer: the hex digits after %25 may themselves be encoded.
    assert_eq!(refused("https://a.example/%25%31C"), E::DoubleEncoding);
    assert_eq!(refused("https://a.example/%25%32%65"), E::DoubleEncoding);
    assert_eq!(
        canonical("https://a.example/%25%47"),
        "https://a.example/%25G"
    );
    assert_eq!(
        canonical("https://a.example/100%25"),
        "https://a.example/100%25"
    );
    assert_eq!(refused("https://a.example/%"), E::InvalidPercentEncoding);
    assert_eq!(refused("https://a.example/%4"), E::InvalidPercentEncoding);
    assert_eq!(refused("https://a.example/%g0"), E::InvalidPercentEncoding);
    for overlong in [
        "%C0%AE",
        "%C0%AF",
        "%E0%80%AE",
        "%F0%80%80%AE",
        "%C3",
        "%80",
        "%ED%A0%80",
    ] {
        assert_eq!(
            refused(&format!("https://a.example/{overlong}")),
            E::InvalidUtf8,
            "{overlong}"
        );
    }
    assert_eq!(refused("https://a.example/a b"), E::InvalidCharacter);
    assert_eq!(refused("https://a.example/a|b"), E::InvalidCharacter);
    assert_eq!(refused("https://a.example/a\\b"), E::Backslash);
}

#[test]
fn dot_segments_and_slashes() {
    for (input, output) in [
        ("https://a.example", "https://a.example/"),
        ("https://a.example/a/b/c/./../../g", "https://a.example/a/g"),
        (
            "https://a.example/mid/content=5/../6",
            "https://a.example/mid/6",
        ),
        ("https://a.example/../../x", "https://a.example/x"),
        ("https://a.example/a/b/..", "https://a.example/a/"),
        ("https://a.example/a/b/.", "https://a.example/a/b/"),
        ("https://a.example/a/..", "https://a.example/"),
        ("https://a.example//a///b//", "https://a.example/a/b/"),
        ("https://a.example/a//../b", "https://a.example/b"),
        ("https://a.example/a/%2e%2E/b", "https://a.example/b"),
        ("https://a.example/a/...", "https://a.example/a/..."),
        ("https://a.example/a;p=1/b", "https://a.example/a;p=1/b"),
    ] {
        assert_eq!(canonical(input), output, "{input}");
    }
    assert_eq!(
        refused("https://a.example/a/..;/b"),
        E::DotSegmentParameters
    );
    assert_eq!(
        refused("https://a.example/a/.;x/b"),
        E::DotSegmentParameters
    );
}

fn uds_prefix_list() -> AllowList {
    let mut list = AllowList::new();
    list.extend([Rule {
        url: NormalizedUrl::parse("https://cucm.example.com:8443/cucm-uds/").expect("rule url"),
        match_type: MatchType::Prefix,
        methods: AllowedMethods::Chosen(MethodSet::of(&[Method::Get])),
        deployment: None,
        description: "UDS".into(),
        origin: Origin::Editable,
    }]);
    list
}

#[test]
fn escape_attempts_against_a_prefix_rule_are_denied() {
    let list = uds_prefix_list();
    let base = "https://cucm.example.com:8443";
    let cases: &[(&str, Reason)] = &[
        ("/cucm-uds/../admin", Reason::NoRule),
        ("/cucm-uds/%2e%2e/admin", Reason::NoRule),
        ("/cucm-uds/%2E%2e/admin", Reason::NoRule),
        ("/cucm-uds/.%2E/admin", Reason::NoRule),
        ("/cucm-uds//../admin", Reason::NoRule),
        ("/cucm-uds/a/../../admin", Reason::NoRule),
        ("/CUCM-UDS/users", Reason::NoRule),
        ("/cucm-uds/%2fadmin", Reason::Malformed(E::EncodedSlash)),
        (
            "/cucm-uds/..%2F..%2Fadmin",
            Reason::Malformed(E::EncodedSlash),
        ),
        ("/cucm-uds/..\\admin", Reason::Malformed(E::Backslash)),
        ("/cucm-uds/%5c..%5cadmin", Reason::Malformed(E::Backslash)),
        (
            "/cucm-uds/%252e%252e/admin",
            Reason::Malformed(E::DoubleEncoding),
        ),
        (
            "/cucm-uds/%c0%ae%c0%ae/admin",
            Reason::Malformed(E::InvalidUtf8),
        ),
        (
            "/cucm-uds/..;/admin",
            Reason::Malformed(E::DotSegmentParameters),
        ),
        (
            "/cucm-uds/x%00/../../admin",
            Reason::Malformed(E::EncodedNul),
        ),
    ];
    let mut counters = Counters::default();
    for (path, reason) in cases {
        let decision = list.decide(None, "GET", &format!("{base}{path}"));
        counters.record(&decision);
        assert!(!decision.allowed, "{path}");
        assert_eq!(decision.reason, *reason, "{path}");
    }
    for url in [
        "HTTPS://Cucm.Example.Com:8443/cucm-uds/users",
        "https://cucm.example.com:8443//cucm-uds//users",
        "https://cucm.example.com:8443/x/../cucm-uds/users",
        "https://cucm.example.com:8443/cucm-uds/%75sers",
    ] {
        let decision = list.decide(None, "GET", url);
        counters.record(&decision);
        assert!(decision.allowed, "{url}");
        assert_eq!(
            decision.url.map(|u| u.to_string()).as_deref(),
            Some("https://cucm.example.com:8443/cucm-uds/users"),
            "the canonical form is what gets forwarded"
        );
    }
    // The default port: a rule on 443 written without a port matches `:443` and only it.
    let mut list = AllowList::new();
    list.extend([Rule {
        url: NormalizedUrl::parse("https://cuc.example.com/vmrest/").expect("rule url"),
        ..uds_prefix_list().rules()[0].clone()
    }]);
    assert!(
        list.decide(None, "GET", "https://cuc.example.com:443/vmrest/x")
            .allowed
    );
    assert!(
        !list
            .decide(None, "GET", "https://cuc.example.com:8443/vmrest/x")
            .allowed
    );
    assert!(
        !list
            .decide(None, "GET", "http://cuc.example.com:443/vmrest/x")
            .allowed
    );
    assert_eq!(counters.allowed_editable, 4);
    assert_eq!(counters.denied_no_rule, 7);
    assert_eq!(counters.denied_malformed, 8);
    assert_eq!(counters.denied(), 15);
}

#[test]
fn methods_defaults_and_deployments() {
    let mut list = AllowList::new();
    let rule = |path: &str, methods, deployment: Option<&str>| Rule {
        url: NormalizedUrl::parse(&format!("https://h.example{path}")).expect("rule url"),
        match_type: MatchType::Exact,
        methods,
        deployment: deployment.map(str::to_owned),
        description: String::new(),
        origin: Origin::Editable,
    };
    list.extend([
        rule("/d", AllowedMethods::Defaults, None),
        rule(
            "/c",
            AllowedMethods::Chosen(MethodSet::of(&[Method::Delete])),
            None,
        ),
        rule("/p", AllowedMethods::Defaults, Some("east")),
    ]);
    let decide = |list: &AllowList, dep, method, path: &str| {
        list.decide(dep, method, &format!("https://h.example{path}"))
            .reason
    };
    assert_eq!(decide(&list, None, "GET", "/d"), Reason::Allowed);
    assert_eq!(
        decide(&list, None, "DELETE", "/d"),
        Reason::MethodNotAllowed
    );
    assert_eq!(decide(&list, None, "DELETE", "/c"), Reason::Allowed);
    assert_eq!(decide(&list, None, "GET", "/c"), Reason::MethodNotAllowed);
    assert_eq!(decide(&list, None, "get", "/d"), Reason::UnknownMethod);
    assert_eq!(decide(&list, None, "CONNECT", "/d"), Reason::UnknownMethod);
    assert_eq!(decide(&list, Some("east"), "GET", "/p"), Reason::Allowed);
    assert_eq!(
        decide(&list, Some("west"), "GET", "/p"),
        Reason::OtherDeployment
    );
    assert_eq!(decide(&list, None, "GET", "/p"), Reason::OtherDeployment);
    // A change of defaults applies to every rule on the defaults, not to chosen ones.
    list.set_default_methods(MethodSet::EMPTY);
    assert_eq!(decide(&list, None, "GET", "/d"), Reason::MethodNotAllowed);
    assert_eq!(decide(&list, None, "DELETE", "/c"), Reason::Allowed);
    list.set_default_methods(MethodSet::of(&[Method::Get]));
    list.set_default_deployment(Some("east".into()));
    assert_eq!(decide(&list, None, "GET", "/p"), Reason::Allowed);
}
