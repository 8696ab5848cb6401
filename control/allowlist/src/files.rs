//! The guide's two CSV formats: the rules file ("Allow List Rules File Reference", table 6)
//! and the tests file ("Allow List Tests File Reference", table 7).
//!
//! Where the guide is silent, this module decides (and says so):
//! - the header row must name the columns exactly as the guide does, in its order; letter
//!   case and spaces around names are forgiven;
//! - a row may stop early: missing trailing optional columns read as empty. More columns than
//!   the header's is an error;
//! - blank lines are skipped; every error carries the file's 1-based line number, counted in
//!   LF characters (CRLF files read the same; a lone CR is no line break);
//! - an empty `MatchType` is `prefix` (the guide's default); an empty `HttpMethods` means
//!   "use defaults"; methods are case-insensitive and may carry spaces (`"GET, PUT"`);
//! - a rule URL with a query or fragment is refused (table 6 gives `protocol://host[:port]
//!   [/path]` only);
//! - two rules with the same normalized URL, match type and deployment are duplicates: the
//!   second is refused, naming the first's line;
//! - a test URL that the normalizer refuses is not a bad row: the core would block it, so it
//!   is judged as blocked (and a test expecting `block` passes), which lets escape attempts be
//!   written as tests.

use crate::list::{AllowList, Reason};
use crate::method::{Method, MethodSet};
use crate::normalize::{NormalizeError, NormalizedUrl};
use crate::rule::{AllowedMethods, MatchType, Origin, Rule};

/// The rules file's header, as the guide writes it.
pub const RULES_HEADER: [&str; 5] = [
    "Url",
    "Deployment",
    "HttpMethods",
    "MatchType",
    "Description",
];
/// The tests file's header, as the guide writes it.
pub const TESTS_HEADER: [&str; 5] = [
    "Url",
    "ExpectedResult",
    "Deployment",
    "Description",
    "HttpMethod",
];

/// A refusal of one row (or of the whole file) with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// The file is empty: no header row.
    #[error("line 1: the file is empty; the first line must be the header {expected}")]
    MissingHeader {
        /// The header the guide requires.
        expected: String,
    },
    /// The first line is not the guide's header.
    #[error("line {line}: header must be {expected}, found {found}")]
    BadHeader {
        /// Line number.
        line: u64,
        /// The header the guide requires.
        expected: String,
        /// What the file has.
        found: String,
    },
    /// More columns than the format has.
    #[error("line {line}: {found} columns, at most {expected} allowed")]
    ColumnCount {
        /// Line number.
        line: u64,
        /// Columns in the format.
        expected: usize,
        /// Columns in the row.
        found: usize,
    },
    /// A required column is empty.
    #[error("line {line}: {column} is required")]
    Missing {
        /// Line number.
        line: u64,
        /// Column name.
        column: &'static str,
    },
    /// The URL was refused.
    #[error("line {line}: bad Url {url:?}: {source}")]
    BadUrl {
        /// Line number.
        line: u64,
        /// The URL as written.
        url: String,
        /// Why.
        source: NormalizeError,
    },
    /// A rule URL with a query string or fragment.
    #[error("line {line}: Url {url:?} must not carry a query or fragment")]
    UrlHasQuery {
        /// Line number.
        line: u64,
        /// The URL as written.
        url: String,
    },
    /// A match type other than exact and prefix.
    #[error("line {line}: MatchType {found:?} must be exact or prefix")]
    BadMatchType {
        /// Line number.
        line: u64,
        /// What the row has.
        found: String,
    },
    /// A method the allow list does not know (CONNECT and TRACE included).
    #[error("line {line}: unknown HTTP method {found:?}")]
    BadMethod {
        /// Line number.
        line: u64,
        /// What the row has.
        found: String,
    },
    /// More than one method in a test's HttpMethod.
    #[error("line {line}: HttpMethod must name one method, found {found:?}")]
    SeveralMethods {
        /// Line number.
        line: u64,
        /// What the row has.
        found: String,
    },
    /// An expected result other than allow and block.
    #[error("line {line}: ExpectedResult {found:?} must be allow or block")]
    BadExpectedResult {
        /// Line number.
        line: u64,
        /// What the row has.
        found: String,
    },
    /// The same rule twice in one file.
    #[error("line {line}: duplicate of the rule on line {first_line}")]
    Duplicate {
        /// Line number.
        line: u64,
        /// Where the rule first appeared.
        first_line: u64,
    },
    /// A rule that the store already holds.
    #[error("line {line}: duplicate of a rule already stored")]
    AlreadyStored {
        /// Line number.
        line: u64,
    },
    /// The CSV syntax itself is broken (an unterminated quote, invalid UTF-8).
    #[error("line {line}: malformed CSV: {message}")]
    Syntax {
        /// Line number.
        line: u64,
        /// The CSV reader's words.
        message: String,
    },
}

impl CsvError {
    /// The line the error is about.
    pub fn line(&self) -> u64 {
        match self {
            CsvError::MissingHeader { .. } => 1,
            CsvError::BadHeader { line, .. }
            | CsvError::ColumnCount { line, .. }
            | CsvError::Missing { line, .. }
            | CsvError::BadUrl { line, .. }
            | CsvError::UrlHasQuery { line, .. }
            | CsvError::BadMatchType { line, .. }
            | CsvError::BadMethod { line, .. }
            | CsvError::SeveralMethods { line, .. }
            | CsvError::BadExpectedResult { line, .. }
            | CsvError::Duplicate { line, .. }
            | CsvError::AlreadyStored { line }
            | CsvError::Syntax { line, .. } => *line,
        }
    }
}

/// A parsed file: every good row with its line, every bad row's error. A bad header leaves
/// no rows at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    /// `(line, row)` in file order.
    pub rows: Vec<(u64, T)>,
    /// Refused rows in file order.
    pub errors: Vec<CsvError>,
}

/// Reads rows of at most five fields after checking the header; calls `row` with the line
/// number and the fields (missing trailing fields as `""`).
fn read_rows<T>(
    text: &str,
    header: &[&str; 5],
    mut row: impl FnMut(u64, [&str; 5]) -> Result<T, CsvError>,
) -> Parsed<T> {
    let mut parsed = Parsed {
        rows: Vec::new(),
        errors: Vec::new(),
    };
    let expected = header.join(",");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        // Only LF ends a record (CRLF files leave a CR that trimming removes): the csv crate
        // also ends records at a lone CR, which would give two rows one line number.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let mut header_seen = false;
    loop {
        let record = match records.next() {
            None => break,
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                let line = error.position().map_or(0, csv::Position::line);
                parsed.errors.push(CsvError::Syntax {
                    line,
                    message: error.to_string(),
                });
                if !header_seen || matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    return parsed;
                }
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if !header_seen {
            header_seen = true;
            let found: Vec<&str> = record.iter().map(str::trim).collect();
            let matches = found.len() == header.len()
                && found
                    .iter()
                    .zip(header)
                    .all(|(f, h)| f.eq_ignore_ascii_case(h));
            if !matches {
                parsed.errors.push(CsvError::BadHeader {
                    line,
                    expected,
                    found: found.join(","),
                });
                return parsed;
            }
            continue;
        }
        if record.len() > header.len() {
            parsed.errors.push(CsvError::ColumnCount {
                line,
                expected: header.len(),
                found: record.len(),
            });
            continue;
        }
        let mut fields = [""; 5];
        for (slot, field) in fields.iter_mut().zip(record.iter()) {
            *slot = field.trim();
        }
        match row(line, fields) {
            Ok(value) => parsed.rows.push((line, value)),
            Err(error) => parsed.errors.push(error),
        }
    }
    if !header_seen && parsed.errors.is_empty() {
        parsed.errors.push(CsvError::MissingHeader { expected });
    }
    parsed
}

fn parse_url(line: u64, url: &str) -> Result<NormalizedUrl, CsvError> {
    if url.is_empty() {
        return Err(CsvError::Missing {
            line,
            column: "Url",
        });
    }
    NormalizedUrl::parse(url).map_err(|source| CsvError::BadUrl {
        line,
        url: url.to_owned(),
        source,
    })
}

fn optional(field: &str) -> Option<String> {
    (!field.is_empty()).then(|| field.to_owned())
}

/// Parses a rules file (table 6). Duplicates within the file are refused here; duplicates of
/// rules already stored are the store's to refuse.
pub fn parse_rules(text: &str) -> Parsed<Rule> {
    let mut parsed = read_rows(
        text,
        &RULES_HEADER,
        |line, [url, deployment, methods, match_type, description]| {
            let url_text = url;
            if url_text.contains(['?', '#']) {
                return Err(CsvError::UrlHasQuery {
                    line,
                    url: url_text.to_owned(),
                });
            }
            let url = parse_url(line, url_text)?;
            let match_type = match match_type.to_ascii_lowercase().as_str() {
                "" | "prefix" => MatchType::Prefix,
                "exact" => MatchType::Exact,
                _ => {
                    return Err(CsvError::BadMatchType {
                        line,
                        found: match_type.to_owned(),
                    })
                }
            };
            let methods = if methods.is_empty() {
                AllowedMethods::Defaults
            } else {
                let mut set = MethodSet::EMPTY;
                for token in methods.split(',') {
                    let method = Method::from_csv(token).ok_or_else(|| CsvError::BadMethod {
                        line,
                        found: token.trim().to_owned(),
                    })?;
                    set = set.with(method);
                }
                AllowedMethods::Chosen(set)
            };
            Ok(Rule {
                url,
                match_type,
                methods,
                deployment: optional(deployment),
                description: description.to_owned(),
                origin: Origin::Editable,
            })
        },
    );
    refuse_duplicates(&mut parsed, &[]);
    parsed
}

/// Moves rows that repeat an earlier row, or one of `existing`, into the errors (in line
/// order), keeping the first.
pub fn refuse_duplicates(parsed: &mut Parsed<Rule>, existing: &[Rule]) {
    let mut kept: Vec<(u64, Rule)> = Vec::with_capacity(parsed.rows.len());
    for (line, rule) in parsed.rows.drain(..) {
        let error = if existing.iter().any(|r| r.same_target(&rule)) {
            Some(CsvError::AlreadyStored { line })
        } else {
            kept.iter()
                .find(|(_, r)| r.same_target(&rule))
                .map(|(first_line, _)| CsvError::Duplicate {
                    line,
                    first_line: *first_line,
                })
        };
        match error {
            Some(error) => parsed.errors.push(error),
            None => kept.push((line, rule)),
        }
    }
    parsed.rows = kept;
    parsed.errors.sort_by_key(CsvError::line);
}

/// One row of a tests file (table 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowListTest {
    /// The URL as written (normalized when run).
    pub url: String,
    /// `true` for allow, `false` for block.
    pub expect_allowed: bool,
    /// The deployment; `None` uses the default deployment.
    pub deployment: Option<String>,
    /// The operator's text.
    pub description: String,
    /// The method, GET when the row gives none.
    pub method: Method,
}

/// Parses a tests file (table 7).
pub fn parse_tests(text: &str) -> Parsed<AllowListTest> {
    read_rows(
        text,
        &TESTS_HEADER,
        |line, [url, expected, deployment, description, method]| {
            if url.is_empty() {
                return Err(CsvError::Missing {
                    line,
                    column: "Url",
                });
            }
            let expect_allowed = match expected.to_ascii_lowercase().as_str() {
                "allow" => true,
                "block" => false,
                "" => {
                    return Err(CsvError::Missing {
                        line,
                        column: "ExpectedResult",
                    })
                }
                _ => {
                    return Err(CsvError::BadExpectedResult {
                        line,
                        found: expected.to_owned(),
                    })
                }
            };
            let method = if method.is_empty() {
                Method::Get
            } else if method.contains(',') {
                return Err(CsvError::SeveralMethods {
                    line,
                    found: method.to_owned(),
                });
            } else {
                Method::from_csv(method).ok_or_else(|| CsvError::BadMethod {
                    line,
                    found: method.to_owned(),
                })?
            };
            Ok(AllowListTest {
                url: url.to_owned(),
                expect_allowed,
                deployment: optional(deployment),
                description: description.to_owned(),
                method,
            })
        },
    )
}

/// The result of one test line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// The test's line.
    pub line: u64,
    /// Whether the decision matched the expectation.
    pub passed: bool,
    /// Whether the list allowed the request.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The deciding rule, when one covered the URL.
    pub rule: Option<Rule>,
}

/// Runs parsed tests against `list`, one outcome per test in order.
pub fn run_tests(list: &AllowList, tests: &[(u64, AllowListTest)]) -> Vec<TestOutcome> {
    tests
        .iter()
        .map(|(line, test)| {
            let decision = list.decide(test.deployment.as_deref(), test.method.as_str(), &test.url);
            TestOutcome {
                line: *line,
                passed: decision.allowed == test.expect_allowed,
                allowed: decision.allowed,
                reason: decision.reason,
                rule: decision.rule.cloned(),
            }
        })
        .collect()
}
