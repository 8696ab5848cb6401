//! `edgewayctl allowlist`: the built binary on the guide's CSV files and the project's escape
//! and automatic-rule files under `tests/data/allowlist/`, with a rules store in a temporary
//! directory: upload (added and refused rows by line, the store the core reads), test
//! (pass/FAIL per line, exit status), check (one request, canonical URL).

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(name: &str) -> String {
    format!(
        "{}/../../tests/data/allowlist/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A unique directory for one test's store, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "edgewayctl-allowlist-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Dir(dir)
    }

    fn store(&self) -> String {
        self.0.join("store/allowlist.json").display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn edgewayctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .arg("allowlist")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run edgewayctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

#[test]
fn upload_then_test_the_guide_files() {
    let dir = Dir::new("guide");
    let store = dir.store();
    let out = edgewayctl(&["upload", &data("guide-rules.csv"), "--store", &store]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in 2..=6 {
        assert!(text.contains(&format!("line {line}: added ")), "{text}");
    }
    assert!(
        text.contains("5 added, 0 refused; 5 editable rules"),
        "{text}"
    );
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&store).expect("store written"))
            .expect("JSON");
    assert_eq!(stored["rules"].as_array().map(Vec::len), Some(5));
    assert_eq!(stored["rules"][0]["url"]["host"], "myserver1");

    // Uploading the same file again refuses every row as a duplicate of a stored rule.
    let again = edgewayctl(&["upload", &data("guide-rules.csv"), "--store", &store]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stdout(&again).contains("line 2: duplicate of a rule already stored"),
        "{}",
        stdout(&again)
    );
    assert!(stdout(&again).contains("0 added, 5 refused; 5 editable rules"));

    // The guide's tests against its rules: line 3 fails as the guide wrote it (its rule is in
    // myDomain200), so the run exits 1 with the other lines passing.
    let run = edgewayctl(&[
        "test",
        &data("guide-tests.csv"),
        "--rules",
        &store,
        "--default-deployment",
        "myDomain1",
    ]);
    let text = stdout(&run);
    assert_eq!(run.status.code(), Some(1), "{text}");
    assert!(
        text.contains("line 2: pass block: only rules of another deployment match"),
        "{text}"
    );
    assert!(
        text.contains("line 3: FAIL block: only rules of another deployment match"),
        "{text}"
    );
    assert!(text.contains("deployment=\"myDomain200\""), "{text}");
    assert!(
        text.contains("line 4: pass allow: allowed by rule"),
        "{text}"
    );
    assert!(
        text.contains("line 5: pass block: no rule matches"),
        "{text}"
    );
    assert!(text.contains("3 passed, 1 failed, 0 bad rows"), "{text}");
}

#[test]
fn escape_and_automatic_tests_all_pass() {
    let escapes = edgewayctl(&[
        "test",
        &data("escape-tests.csv"),
        "--rules",
        &data("escape-rules.csv"),
    ]);
    let text = stdout(&escapes);
    assert!(escapes.status.success(), "{text}");
    assert!(text.contains("41 passed, 0 failed, 0 bad rows"), "{text}");
    assert!(
        text.contains("line 9: pass block: refused URL: encoded slash"),
        "{text}"
    );

    let dir = Dir::new("automatic");
    let automatic = edgewayctl(&[
        "test",
        &data("automatic-tests.csv"),
        "--nodes",
        &data("nodes.json"),
        "--rules",
        &dir.store(),
    ]);
    let text = stdout(&automatic);
    assert!(automatic.status.success(), "{text}");
    assert!(text.contains("14 passed, 0 failed"), "{text}");
    assert!(text.contains("(automatic, Unified CM servers)"), "{text}");
}

#[test]
fn bad_rows_are_reported_by_line_and_good_rows_stored() {
    let dir = Dir::new("bad");
    let store = dir.store();
    let out = edgewayctl(&["upload", &data("bad-rules.csv"), "--store", &store]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("line 2: added exact https://good.example.com/ok"),
        "{text}"
    );
    assert!(
        text.contains("line 3: duplicate of the rule on line 2 (refused)"),
        "{text}"
    );
    assert!(
        text.contains("line 4: 6 columns, at most 5 allowed (refused)"),
        "{text}"
    );
    assert!(
        text.contains("line 5: MatchType \"fuzzy\" must be exact or prefix"),
        "{text}"
    );
    assert!(
        text.contains("line 6: unknown HTTP method \"FETCH\""),
        "{text}"
    );
    assert!(text.contains("line 9: bad Url"), "{text}");
    assert!(text.contains("line 11: Url is required"), "{text}");
    assert!(
        text.contains("line 13: added prefix https://good.example.com/second"),
        "{text}"
    );
    assert!(
        text.contains("2 added, 10 refused; 2 editable rules"),
        "{text}"
    );

    // A wrong header stores nothing.
    let header = dir.0.join("header.csv");
    std::fs::write(&header, "Url,Methods\nhttps://a.example/,GET\n").expect("write");
    let replaced = edgewayctl(&["upload", &header.display().to_string(), "--store", &store]);
    assert_eq!(replaced.status.code(), Some(1));
    assert!(stdout(&replaced)
        .contains("line 1: header must be Url,Deployment,HttpMethods,MatchType,Description"));
    assert!(stdout(&replaced).contains("2 editable rules"));

    // --replace swaps the stored rules for the file's.
    let swap = edgewayctl(&[
        "upload",
        &data("escape-rules.csv"),
        "--store",
        &store,
        "--replace",
    ]);
    assert!(swap.status.success(), "{}", stdout(&swap));
    assert!(stdout(&swap).contains("3 added, 0 refused; 3 editable rules"));

    // A rules CSV with bad rows cannot be used for test or check.
    let refused = edgewayctl(&[
        "check",
        "GET",
        "https://good.example.com/ok",
        "--rules",
        &data("bad-rules.csv"),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("10 bad rows, the first: line 3"));
}

#[test]
fn check_one_request() {
    let rules = data("escape-rules.csv");
    let allowed = edgewayctl(&[
        "check",
        "GET",
        "HTTPS://CUCM.example.com:8443//cucm-uds/x/../users",
        "--rules",
        &rules,
    ]);
    assert!(allowed.status.success(), "{}", stdout(&allowed));
    assert!(stdout(&allowed)
        .contains("allow: allowed by rule [prefix https://cucm.example.com:8443/cucm-uds/"));
    assert!(stdout(&allowed).contains("normalized: https://cucm.example.com:8443/cucm-uds/users"));

    let escape = edgewayctl(&[
        "check",
        "GET",
        "https://cucm.example.com:8443/cucm-uds/%2e%2e/admin",
        "--rules",
        &rules,
    ]);
    assert_eq!(escape.status.code(), Some(1));
    assert!(stdout(&escape).contains("block: no rule matches"));
    assert!(stdout(&escape).contains("normalized: https://cucm.example.com:8443/admin"));

    let method = edgewayctl(&[
        "check",
        "DELETE",
        "https://cucm.example.com:8443/cucm-uds/users",
        "--rules",
        &rules,
    ]);
    assert_eq!(method.status.code(), Some(1));
    assert!(stdout(&method).contains("block: method not allowed by the matching rule"));

    let malformed = edgewayctl(&[
        "check",
        "GET",
        "https://cucm.example.com:8443/cucm-uds/%252e",
        "--rules",
        &rules,
    ]);
    assert_eq!(malformed.status.code(), Some(1));
    assert!(stdout(&malformed).contains("block: refused URL: double percent-encoding"));

    let dir = Dir::new("corrupt");
    let corrupt = dir.0.join("store.json");
    std::fs::write(&corrupt, "{not json").expect("write");
    let out = edgewayctl(&[
        "check",
        "GET",
        "https://a.example/",
        "--rules",
        &corrupt.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rules store"));
}
