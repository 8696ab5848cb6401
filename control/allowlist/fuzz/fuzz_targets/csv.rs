//! The rules and tests CSV parsers on arbitrary text, then the tests run against the rules
//! parsed from the same input. Checks: never panics, every error names a line >= 1, good rows
//! and errors never share a line, no two kept rules are duplicates, and every outcome belongs
//! to a parsed test line.
#![no_main]

use edgeway_allowlist::{parse_rules, parse_tests, run_tests, AllowList, CsvError};
use libfuzzer_sys::fuzz_target;

fn lines_are_sound<T>(rows: &[(u64, T)], errors: &[CsvError]) {
    for error in errors {
        assert!(error.line() >= 1, "{error:?}");
    }
    for (line, _) in rows {
        assert!(*line >= 2, "rows come after the header");
        assert!(!errors
            .iter()
            .any(|e| e.line() == *line && !matches!(e, CsvError::Syntax { .. })));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Half the inputs get a valid header, so the row parsers are reached.
    let (rules_text, tests_text) = if data.first().is_some_and(|b| b & 1 == 0) {
        (
            format!("Url,Deployment,HttpMethods,MatchType,Description\n{text}"),
            format!("Url,ExpectedResult,Deployment,Description,HttpMethod\n{text}"),
        )
    } else {
        (text.to_owned(), text.to_owned())
    };
    let rules = parse_rules(&rules_text);
    lines_are_sound(&rules.rows, &rules.errors);
    for (i, (_, a)) in rules.rows.iter().enumerate() {
        for (_, b) in &rules.rows[i + 1..] {
            assert!(!a.same_target(b), "duplicates kept: {a:?}");
        }
    }
    let tests = parse_tests(&tests_text);
    lines_are_sound(&tests.rows, &tests.errors);
    let mut list = AllowList::new();
    list.extend(rules.rows.into_iter().map(|(_, r)| r));
    let outcomes = run_tests(&list, &tests.rows);
    assert_eq!(outcomes.len(), tests.rows.len());
    for (outcome, (line, test)) in outcomes.iter().zip(&tests.rows) {
        assert_eq!(outcome.line, *line);
        assert_eq!(outcome.passed, outcome.allowed == test.expect_allowed);
    }
});
