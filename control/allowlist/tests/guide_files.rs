//! One harness over the CSV files in `tests/data/allowlist/`: each case loads a rules file
//! (and optionally a nodes list for automatic rules), runs a tests file, and compares every
//! line's outcome with what the case expects.

use edgeway_allowlist::{
    automatic_rules, parse_rules, parse_tests, run_tests, AllowList, AllowedMethods, CsvError,
    MatchType, Method, MethodSet, Node, NormalizeError, Reason,
};

fn data(name: &str) -> String {
    let path = format!(
        "{}/../../tests/data/allowlist/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Case {
    rules: Option<&'static str>,
    nodes: Option<&'static str>,
    tests: &'static str,
    default_deployment: Option<&'static str>,
    /// Lines expected to fail; every other test line must pass.
    failing_lines: &'static [u64],
}

const CASES: &[Case] = &[
    // The guide's two example files, run against each other. Its rules put every rule but one
    // in myDomain1, read here as the default deployment. Line 3 fails as the guide wrote it:
    // the only rule for myServer2 belongs to myDomain200, not "my deployment".
    Case {
        rules: Some("guide-rules.csv"),
        nodes: None,
        tests: "guide-tests.csv",
        default_deployment: Some("myDomain1"),
        failing_lines: &[3],
    },
    Case {
        rules: Some("escape-rules.csv"),
        nodes: None,
        tests: "escape-tests.csv",
        default_deployment: None,
        failing_lines: &[],
    },
    Case {
        rules: None,
        nodes: Some("nodes.json"),
        tests: "automatic-tests.csv",
        default_deployment: None,
        failing_lines: &[],
    },
];

#[test]
fn every_case_behaves_as_specified() {
    for case in CASES {
        let mut list = AllowList::new();
        if let Some(nodes) = case.nodes {
            let nodes: Vec<Node> = serde_json::from_str(&data(nodes)).expect("nodes.json");
            list.extend(automatic_rules(&nodes).expect("valid nodes"));
        }
        if let Some(rules) = case.rules {
            let parsed = parse_rules(&data(rules));
            assert_eq!(parsed.errors, vec![], "{rules} loads cleanly");
            list.extend(parsed.rows.into_iter().map(|(_, rule)| rule));
        }
        list.set_default_deployment(case.default_deployment.map(str::to_owned));
        let tests = parse_tests(&data(case.tests));
        assert_eq!(tests.errors, vec![], "{} parses cleanly", case.tests);
        assert!(!tests.rows.is_empty());
        for outcome in run_tests(&list, &tests.rows) {
            let expect_pass = !case.failing_lines.contains(&outcome.line);
            assert_eq!(
                outcome.passed, expect_pass,
                "{} line {}: {:?} by {:?}",
                case.tests, outcome.line, outcome.reason, outcome.rule
            );
        }
    }
}

#[test]
fn guide_rules_file_reads_as_the_guide_describes() {
    let parsed = parse_rules(&data("guide-rules.csv"));
    let rules: Vec<_> = parsed.rows.iter().map(|(_, r)| r).collect();
    assert_eq!(
        parsed.rows.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    // Row 1: one chosen method, empty MatchType is prefix, quoted description.
    assert_eq!(rules[0].url.to_string(), "https://myserver1:8443/myPath1");
    assert_eq!(
        rules[0].methods,
        AllowedMethods::Chosen(MethodSet::of(&[Method::Get]))
    );
    assert_eq!(rules[0].match_type, MatchType::Prefix);
    assert_eq!(rules[0].deployment.as_deref(), Some("myDomain1"));
    assert_eq!(rules[0].description, "First Rule");
    // Row 2: quoted method list, exact, empty description.
    assert_eq!(
        rules[1].methods,
        AllowedMethods::Chosen(MethodSet::of(&[Method::Get, Method::Put]))
    );
    assert_eq!(rules[1].match_type, MatchType::Exact);
    assert_eq!(rules[1].description, "");
    // Rows 3-5: empty methods use the defaults; no port means the scheme's default.
    assert_eq!(rules[2].methods, AllowedMethods::Defaults);
    assert_eq!(rules[3].url.port, 443);
    assert_eq!(rules[4].url.port, 80);
}

#[test]
fn crlf_files_read_the_same_and_a_lone_cr_is_no_line_break() {
    for (name, text) in [
        ("guide-rules.csv", data("guide-rules.csv")),
        ("bad-rules.csv", data("bad-rules.csv")),
    ] {
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(parse_rules(&crlf), parse_rules(&text), "{name}");
    }
    let tests = data("guide-tests.csv");
    assert_eq!(
        parse_tests(&tests.replace('\n', "\r\n")),
        parse_tests(&tests)
    );
    // Found by the fuzzer: a CR inside a row used to end it, so two rows shared a line.
    let parsed = parse_rules(
        "Url,Deployment,HttpMethods,MatchType,Description\nhttps://a.example/x\r/y,,,,\n",
    );
    assert!(parsed.rows.is_empty());
    assert!(matches!(
        parsed.errors[..],
        [CsvError::BadUrl {
            line: 2,
            source: NormalizeError::InvalidCharacter,
            ..
        }]
    ));
}

#[test]
fn guide_tests_file_reads_as_the_guide_describes() {
    let parsed = parse_tests(&data("guide-tests.csv"));
    let tests: Vec<_> = parsed.rows.iter().map(|(_, t)| t).collect();
    assert_eq!(tests.len(), 4);
    assert!(!tests[0].expect_allowed);
    assert_eq!(tests[0].deployment.as_deref(), Some("my deployment"));
    assert_eq!(tests[0].description, "a block test");
    assert_eq!(tests[1].method, Method::Put);
    assert_eq!(tests[2].deployment, None);
    assert_eq!(tests[3].method, Method::Post);
}

#[test]
fn guide_test_reasons_name_the_deciding_rule() {
    let mut list = AllowList::new();
    list.extend(
        parse_rules(&data("guide-rules.csv"))
            .rows
            .into_iter()
            .map(|(_, r)| r),
    );
    list.set_default_deployment(Some("myDomain1".into()));
    let tests = parse_tests(&data("guide-tests.csv")).rows;
    let outcomes = run_tests(&list, &tests);
    assert_eq!(outcomes[0].reason, Reason::OtherDeployment);
    assert_eq!(outcomes[1].reason, Reason::OtherDeployment);
    let rule = outcomes[1]
        .rule
        .as_ref()
        .expect("the myDomain200 rule covers it");
    assert_eq!(rule.deployment.as_deref(), Some("myDomain200"));
    assert_eq!(outcomes[2].reason, Reason::Allowed);
    assert_eq!(
        outcomes[3].reason,
        Reason::NoRule,
        "http:80 is not https:443"
    );
}

#[test]
fn bad_rows_are_refused_with_their_line_numbers() {
    let parsed = parse_rules(&data("bad-rules.csv"));
    assert_eq!(
        parsed.rows.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2, 13]
    );
    let e = &parsed.errors;
    assert_eq!(e.len(), 10, "{e:#?}");
    assert_eq!(
        e[0],
        CsvError::Duplicate {
            line: 3,
            first_line: 2
        }
    );
    assert_eq!(
        e[1],
        CsvError::ColumnCount {
            line: 4,
            expected: 5,
            found: 6
        }
    );
    assert!(matches!(&e[2], CsvError::BadMatchType { line: 5, found } if found == "fuzzy"));
    assert!(matches!(&e[3], CsvError::BadMethod { line: 6, found } if found == "FETCH"));
    assert!(matches!(&e[4], CsvError::BadMethod { line: 7, found } if found == "TRACE"));
    assert!(matches!(
        &e[5],
        CsvError::BadUrl {
            line: 8,
            source: NormalizeError::UnsupportedScheme,
            ..
        }
    ));
    assert!(matches!(
        &e[6],
        CsvError::BadUrl {
            line: 9,
            source: NormalizeError::InvalidPort,
            ..
        }
    ));
    assert!(matches!(&e[7], CsvError::UrlHasQuery { line: 10, .. }));
    assert_eq!(
        e[8],
        CsvError::Missing {
            line: 11,
            column: "Url"
        }
    );
    assert!(matches!(
        &e[9],
        CsvError::BadUrl {
            line: 12,
            source: NormalizeError::EncodedSlash,
            ..
        }
    ));
    for error in e {
        assert!(error
            .to_string()
            .starts_with(&format!("line {}:", error.line())));
    }
}

#[test]
fn bad_headers_and_syntax_are_refused() {
    let wrong =
        parse_rules("Url,Deployment,Methods,MatchType,Description\nhttps://a.example/,,,,\n");
    assert!(wrong.rows.is_empty());
    assert!(matches!(
        wrong.errors[..],
        [CsvError::BadHeader { line: 1, .. }]
    ));
    let tests_header_for_rules =
        parse_rules("Url,ExpectedResult,Deployment,Description,HttpMethod\n");
    assert!(matches!(
        tests_header_for_rules.errors[..],
        [CsvError::BadHeader { .. }]
    ));
    assert!(matches!(
        parse_rules("").errors[..],
        [CsvError::MissingHeader { .. }]
    ));
    let case_forgiven =
        parse_rules(" url , deployment,HTTPMETHODS,matchtype,description\nhttps://a.example/\n");
    assert_eq!(case_forgiven.errors, vec![]);
    assert_eq!(
        case_forgiven.rows.len(),
        1,
        "a short row reads missing columns as empty"
    );
    let bad_utf8 = parse_tests(
        "Url,ExpectedResult,Deployment,Description,HttpMethod\nhttps://a.example/\u{0},allow\n",
    );
    assert_eq!(
        bad_utf8.rows.len(),
        1,
        "a NUL is just a bad URL, judged blocked"
    );
}

#[test]
fn bad_test_rows_are_refused_with_their_line_numbers() {
    let text = "Url,ExpectedResult,Deployment,Description,HttpMethod\n\
                https://a.example/,maybe,,,\n\
                https://a.example/,allow,,,\"GET,PUT\"\n\
                https://a.example/,allow,,,FETCH\n\
                https://a.example/,,,,\n\
                ,allow,,,\n\
                https://a.example/,block,,,\n";
    let parsed = parse_tests(text);
    assert_eq!(parsed.rows.len(), 1);
    assert_eq!(parsed.rows[0].0, 7);
    assert_eq!(
        parsed.errors.iter().map(CsvError::line).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    assert!(matches!(
        parsed.errors[0],
        CsvError::BadExpectedResult { .. }
    ));
    assert!(matches!(parsed.errors[1], CsvError::SeveralMethods { .. }));
    assert!(matches!(parsed.errors[2], CsvError::BadMethod { .. }));
    assert!(matches!(
        parsed.errors[3],
        CsvError::Missing {
            column: "ExpectedResult",
            ..
        }
    ));
    assert!(matches!(
        parsed.errors[4],
        CsvError::Missing { column: "Url", .. }
    ));
}
