//! `edgewayctl allowlist`: the core's HTTP allow list from the command line. `upload` checks
//! a rules CSV (the guide's format) and adds its good rows to the rules store the core reads;
//! `test` runs a tests CSV against the stored rules plus the automatic rules of a node list;
//! `check` judges one request. All decisions come from `edgeway-allowlist`; this module only
//! reads and writes files and prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use edgeway_allowlist::{
    automatic_rules, files::refuse_duplicates, parse_rules, parse_tests, run_tests, AllowList,
    CsvError, Decision, Node, Rule, RuleStore,
};

/// Where the core reads its editable rules unless told otherwise.
const DEFAULT_STORE: &str = "/var/lib/edgeway/allowlist.json";

/// Upload rules, run tests, or check one request against the HTTP allow list.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AllowlistCommand {
    /// Validate a rules CSV and add its good rows to the rules store (refused rows by line).
    Upload {
        /// The rules file (Url,Deployment,HttpMethods,MatchType,Description).
        rules_csv: PathBuf,
        /// The rules store (JSON) to add to; created when missing.
        #[arg(long, default_value = DEFAULT_STORE)]
        store: PathBuf,
        /// Replace the stored editable rules instead of adding to them.
        #[arg(long)]
        replace: bool,
    },
    /// Run a tests CSV; prints pass/FAIL per line, exits 1 when any test fails.
    Test {
        /// The tests file (Url,ExpectedResult,Deployment,Description,HttpMethod).
        tests_csv: PathBuf,
        #[command(flatten)]
        rules: RuleSources,
    },
    /// Judge one request; exits 0 when allowed, 1 when blocked.
    Check {
        /// The HTTP method, as sent (case-sensitive).
        method: String,
        /// The absolute URL (http or https).
        url: String,
        /// The user's deployment (default: the default deployment).
        #[arg(long)]
        deployment: Option<String>,
        #[command(flatten)]
        rules: RuleSources,
    },
}

/// Which rules a test or check is judged against.
#[derive(Debug, clap::Args)]
pub(crate) struct RuleSources {
    /// Editable rules: a rules store (JSON) or a rules CSV (`.csv`, must load cleanly).
    #[arg(long, default_value = DEFAULT_STORE)]
    rules: PathBuf,
    /// Discovered nodes (JSON list of {kind, host, http_port?, https_port?}) whose automatic
    /// rules are added.
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// The deployment of requests and tests that name none.
    #[arg(long)]
    default_deployment: Option<String>,
}

/// Runs one `allowlist` subcommand; a refused row, failed test or blocked check exits 1
/// after everything is printed.
pub(crate) fn run(command: AllowlistCommand) -> anyhow::Result<()> {
    let success = match command {
        AllowlistCommand::Upload {
            rules_csv,
            store,
            replace,
        } => upload(&rules_csv, &store, replace),
        AllowlistCommand::Test { tests_csv, rules } => test(&tests_csv, &rules),
        AllowlistCommand::Check {
            method,
            url,
            deployment,
            rules,
        } => check(&method, &url, deployment.as_deref(), &rules),
    }?;
    if !success {
        io::stdout().flush()?;
        std::process::exit(1);
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_store(path: &Path) -> anyhow::Result<RuleStore> {
    match std::fs::read_to_string(path) {
        Ok(text) => RuleStore::from_json(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RuleStore::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes beside the store and renames over it, so the core never reads half a file.
fn write_store(path: &Path, store: &RuleStore) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, store.to_json() + "\n")
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

fn upload(rules_csv: &Path, store_path: &Path, replace: bool) -> anyhow::Result<bool> {
    let mut store = read_store(store_path)?;
    if replace {
        store.rules.clear();
    }
    let mut parsed = parse_rules(&read(rules_csv)?);
    refuse_duplicates(&mut parsed, &store.rules);
    let mut out = io::stdout().lock();
    let added_lines = parsed
        .rows
        .iter()
        .map(|(line, rule)| (*line, format!("line {line}: added {rule}")));
    print_in_line_order(&mut out, added_lines, &parsed.errors, "refused")?;
    let added = parsed.rows.len();
    if added > 0 || replace {
        store
            .rules
            .extend(parsed.rows.into_iter().map(|(_, rule)| rule));
        write_store(store_path, &store)?;
    }
    writeln!(
        out,
        "{added} added, {} refused; {} editable rules in {}",
        parsed.errors.len(),
        store.rules.len(),
        store_path.display()
    )?;
    Ok(parsed.errors.is_empty())
}

fn load_list(sources: &RuleSources) -> anyhow::Result<AllowList> {
    let automatic = match &sources.nodes {
        Some(path) => {
            let nodes: Vec<Node> = serde_json::from_str(&read(path)?)
                .with_context(|| format!("{}: not a JSON node list", path.display()))?;
            automatic_rules(&nodes).with_context(|| format!("{}", path.display()))?
        }
        None => Vec::new(),
    };
    let is_csv = sources
        .rules
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut list = if is_csv {
        let parsed = parse_rules(&read(&sources.rules)?);
        if let Some(first) = parsed.errors.first() {
            anyhow::bail!(
                "{}: {} bad rows, the first: {first}",
                sources.rules.display(),
                parsed.errors.len()
            );
        }
        RuleStore {
            rules: parsed.rows.into_iter().map(|(_, rule)| rule).collect(),
            ..RuleStore::default()
        }
        .allow_list(automatic)
    } else {
        read_store(&sources.rules)?.allow_list(automatic)
    };
    list.set_default_deployment(sources.default_deployment.clone());
    Ok(list)
}

/// Prints row results and row errors merged in file order, each error marked with `fate`.
fn print_in_line_order(
    out: &mut impl Write,
    rows: impl Iterator<Item = (u64, String)>,
    errors: &[CsvError],
    fate: &str,
) -> io::Result<()> {
    let mut lines: Vec<(u64, String)> = rows
        .chain(errors.iter().map(|e| (e.line(), format!("{e} ({fate})"))))
        .collect();
    lines.sort_by_key(|(line, _)| *line);
    for (_, text) in &lines {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

fn describe(rule: Option<&Rule>) -> String {
    rule.map_or_else(String::new, |rule| format!(" [{rule}]"))
}

fn test(tests_csv: &Path, sources: &RuleSources) -> anyhow::Result<bool> {
    let list = load_list(sources)?;
    let parsed = parse_tests(&read(tests_csv)?);
    let outcomes = run_tests(&list, &parsed.rows);
    let mut out = io::stdout().lock();
    let outcome_lines = outcomes.iter().map(|o| {
        let verdict = if o.passed { "pass" } else { "FAIL" };
        let decision = if o.allowed { "allow" } else { "block" };
        let text = format!(
            "line {}: {verdict} {decision}: {}{}",
            o.line,
            o.reason,
            describe(o.rule.as_ref())
        );
        (o.line, text)
    });
    print_in_line_order(&mut out, outcome_lines, &parsed.errors, "not run")?;
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    writeln!(
        out,
        "{} passed, {failed} failed, {} bad rows",
        outcomes.len() - failed,
        parsed.errors.len()
    )?;
    Ok(failed == 0 && parsed.errors.is_empty())
}

fn check(
    method: &str,
    url: &str,
    deployment: Option<&str>,
    sources: &RuleSources,
) -> anyhow::Result<bool> {
    let list = load_list(sources)?;
    let Decision {
        allowed,
        rule,
        reason,
        url: canonical,
    } = list.decide(deployment, method, url);
    let mut out = io::stdout().lock();
    let verdict = if allowed { "allow" } else { "block" };
    writeln!(out, "{verdict}: {reason}{}", describe(rule))?;
    if let Some(canonical) = canonical {
        writeln!(out, "normalized: {canonical}")?;
    }
    Ok(allowed)
}
