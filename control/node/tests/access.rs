//! MRA access control end to end, with curl through edge and core and ucm-sim as Unified
//! CM: basic credentials checked with Unified CM (UDS) once and then served from the core's
//! cache; wrong passwords get 401; self-describing tokens issued by ucm-sim are verified
//! with the keys the core fetched from it, expire, are renewed with the refresh-token grant,
//! and forged ones (signature flipped, another key) get 401 `invalid_token`; a token without
//! the MRA access policy gets 403; authorization rate control answers 429 with Retry-After
//! past the limit without asking Unified CM; path "None" needs no credentials.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    core_config, curl_present, edge_config, pair_pki, ClusterOptions, Node, Scratch, UcmHttpSim,
};
use edgeway_testkit::pki::Eku;
use serde_json::Value;

const USERS: &str = r#"
[[user]]
name = "alice"
password = "alice-secret"
number = "1001"
security_profile = "non-secure"
devices = ["CSFALICE"]

[[user]]
name = "bob"
password = "bob-secret"
number = "1002"
security_profile = "non-secure"

[[user]]
name = "dave"
password = "dave-secret"
number = "1004"
security_profile = "non-secure"
"#;

/// What curl got: status, the response head, the body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    /// Every value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A CA, ucm-sim with its HTTP side, an edge and a core with `[http.access]`, tunnel up.
struct Rig {
    dir: Scratch,
    ucm: UcmHttpSim,
    edge: Node,
    core: Node,
    https: SocketAddr,
}

impl Rig {
    fn start(access: &str, ucm_extra: &[&str]) -> Rig {
        let dir = Scratch::new("access");
        let pki = pair_pki(dir.path(), Eku::Both);
        let ucm = UcmHttpSim::start(dir.path(), &pki, USERS, ucm_extra);
        let edge = Node::start(&edge_config(
            dir.path(),
            "core.example.com",
            "[http]\nlisten = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\n",
        ));
        let opts = ClusterOptions {
            core_extra: format!(
                "[http]\ntunnel_address = \"{tunnel}\"\nuds_port = {uds}\ntftp_port = {tftp}\n\
                 [[http.nodes]]\nkind = \"unity_connection\"\nhost = \"127.0.0.1\"\nhttps_port = {uds}\n\
                 [http.access]\n{access}\n",
                tunnel = edge.addr("http_tunnel"),
                uds = ucm.https.port(),
                tftp = ucm.http.port(),
            ),
            ..ClusterOptions::default()
        };
        let core = Node::start(&core_config(
            dir.path(),
            edge.addr("traversal"),
            ucm.sip_tcp,
            "tcp",
            &opts,
        ));
        let https = edge.addr("https");
        let rig = Rig {
            dir,
            ucm,
            edge,
            core,
            https,
        };
        rig.wait_tunnel();
        rig
    }

    /// Waits until the core answers through the tunnel (anything but 502).
    fn wait_tunnel(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.curl(&self.edge_config(), &[]);
            if r.status != 502 && r.status != 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HTTP tunnel did not come up (last {})\nedge:\n{}\ncore:\n{}",
                r.status,
                self.edge.log.text(),
                self.core.log.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn run_curl(&self, url: &str, extra: &[&str]) -> Reply {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .arg("--cacert")
            .arg(self.dir.path().join("ca.pem"))
            .arg("--resolve")
            .arg(format!("edge.example.com:{}:127.0.0.1", self.https.port()))
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (all, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((all, ""));
        Reply {
            status: code.trim().parse().unwrap_or(0),
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// `curl` of `path` on the edge, as an MRA client.
    fn curl(&self, path: &str, extra: &[&str]) -> Reply {
        self.run_curl(
            &format!("https://edge.example.com:{}{path}", self.https.port()),
            extra,
        )
    }

    fn edge_config(&self) -> String {
        format!("/{}/get_edge_config/", b64("example.com"))
    }

    fn vmrest(&self) -> String {
        format!(
            "/{}/https/127.0.0.1/{}/vmrest/user",
            b64("example.com"),
            self.ucm.https.port()
        )
    }

    fn tftp(&self) -> String {
        format!(
            "/{}/http/127.0.0.1/{}/CSFALICE.cnf.xml",
            b64("example.com"),
            self.ucm.http.port()
        )
    }

    /// A token grant straight from ucm-sim's issuer (as Unified CM's OAuth service).
    fn grant(&self, form: &[&str]) -> Value {
        let mut args = Vec::new();
        for field in form {
            args.extend(["--data-urlencode", field]);
        }
        let r = self.run_curl(
            &format!("https://127.0.0.1:{}/oauth/token", self.ucm.https.port()),
            &args,
        );
        assert_eq!(r.status, 200, "token grant {form:?}: {}", r.body);
        serde_json::from_str(&r.body).expect("token JSON")
    }

    fn token_for(&self, user: &str) -> Value {
        let password = format!("password={user}-secret");
        let username = format!("username={user}");
        self.grant(&["grant_type=password", &username, &password])
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn bearer(token: &str) -> [String; 2] {
    ["-H".into(), format!("Authorization: Bearer {token}")]
}

fn args(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

#[test]
fn basic_credentials_are_checked_with_unified_cm_once_then_cached_and_wrong_ones_get_401() {
    if !curl_present("MRA access control") {
        return;
    }
    let rig = Rig::start("authorize_by_user_credentials = true", &[]);
    let none = rig.curl(&rig.vmrest(), &[]);
    assert_eq!(none.status, 401, "{}", none.body);
    let challenges = none.header("www-authenticate");
    assert_eq!(
        challenges,
        [
            "Bearer realm=\"example.com\"",
            "Basic realm=\"example.com\", charset=\"UTF-8\""
        ],
        "{}",
        none.head
    );
    assert_eq!(rig.ucm.counter("http_uds_user_ok"), 0);

    let right = ["-u", "alice:alice-secret"];
    let first = rig.curl(&rig.vmrest(), &right);
    assert_eq!(
        first.status,
        200,
        "{}\ncore:\n{}",
        first.body,
        rig.core.log.text()
    );
    assert!(
        first.body.contains("<Alias>alice</Alias>"),
        "{}",
        first.body
    );
    for path in [rig.vmrest(), rig.edge_config(), rig.tftp()] {
        let again = rig.curl(&path, &right);
        assert_eq!(again.status, 200, "{path}: {}", again.body);
    }
    assert_eq!(
        rig.ucm.counter("http_uds_user_ok"),
        1,
        "one credential check with Unified CM; the other requests came from the cache"
    );
    assert_eq!(rig.ucm.counter("http_vmrest_ok"), 2);

    let wrong = rig.curl(&rig.vmrest(), &["-u", "alice:wrong"]);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("Unified CM refused"), "{}", wrong.body);
    assert_eq!(rig.ucm.counter("http_uds_user_refused"), 1);
    assert_eq!(rig.ucm.counter("http_vmrest_ok"), 2, "never forwarded");
    let unknown = rig.curl(&rig.edge_config(), &["-u", "mallory:x"]);
    assert_eq!(unknown.status, 401);
    let garbage = rig.curl(&rig.edge_config(), &["-H", "Authorization: Basic !!!"]);
    assert_eq!(garbage.status, 401, "{}", garbage.body);
}

#[test]
fn tokens_are_verified_expire_are_refreshed_and_forgeries_are_refused() {
    if !curl_present("MRA access control") {
        return;
    }
    let rig = Rig::start(
        "",
        &["--oauth-access-lifetime", "3", "--oauth-no-mra", "dave"],
    );
    let grant = rig.token_for("alice");
    let token = grant["access_token"].as_str().expect("access token");
    let issued = Instant::now();
    let ok = rig.curl(&rig.vmrest(), &args(&bearer(token)));
    assert_eq!(
        ok.status,
        200,
        "{}\ncore:\n{}",
        ok.body,
        rig.core.log.text()
    );
    assert!(ok.body.contains("<Alias>alice</Alias>"), "{}", ok.body);
    assert_eq!(
        rig.curl(&rig.edge_config(), &args(&bearer(token))).status,
        200
    );
    assert!(rig.ucm.counter("oauth_keys_served") >= 1);
    assert_eq!(
        rig.ucm.counter("http_uds_user_ok"),
        0,
        "tokens are checked on the core"
    );

    // Basic is not an authorization method with the guide's defaults.
    let basic = rig.curl(&rig.vmrest(), &["-u", "alice:alice-secret"]);
    assert_eq!(basic.status, 401, "{}", basic.body);

    // The signature flipped, and a token signed by another key under the same kid.
    let (input, signature) = token.rsplit_once('.').expect("JWT");
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("signature");
    raw[7] ^= 0x40;
    let flipped = format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw)
    );
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let other = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let foreign = format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other.sign(input.as_bytes()))
    );
    for forged in [&flipped, &foreign] {
        let r = rig.curl(&rig.vmrest(), &args(&bearer(forged)));
        assert_eq!(r.status, 401, "{}", r.body);
        let challenge = r.header("www-authenticate").join(" ");
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains("signature"),
            "{challenge}"
        );
    }

    // No MRA access policy: 403.
    let dave = rig.token_for("dave");
    let r = rig.curl(
        &rig.vmrest(),
        &args(&bearer(dave["access_token"].as_str().expect("token"))),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("www-authenticate")[0].contains("insufficient_scope"));

    // Expired, then renewed with the refresh token.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(issued.elapsed()));
    let expired = rig.curl(&rig.vmrest(), &args(&bearer(token)));
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    let refresh = format!(
        "refresh_token={}",
        grant["refresh_token"].as_str().expect("refresh token")
    );
    let renewed = rig.grant(&["grant_type=refresh_token", &refresh]);
    let fresh = renewed["access_token"].as_str().expect("new token");
    assert_ne!(fresh, token);
    let r = rig.curl(&rig.vmrest(), &args(&bearer(fresh)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(rig.ucm.counter("oauth_tokens_refreshed"), 1);
}

#[test]
fn rate_control_answers_429_past_the_limit_without_asking_unified_cm() {
    if !curl_present("MRA access control") {
        return;
    }
    let rig = Rig::start(
        "authorize_by_user_credentials = true\nauthorization_rate_control = true\n\
         max_authorizations_per_period = 3\nrate_control_period_s = 60",
        &[],
    );
    for guess in ["a", "b", "c"] {
        let r = rig.curl(&rig.vmrest(), &["-u", &format!("alice:{guess}")]);
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = rig.curl(&rig.vmrest(), &["-u", "alice:alice-secret"]);
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after")[0].parse().expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        rig.ucm.counter("http_uds_user_refused"),
        3,
        "the fourth never reached Unified CM"
    );
    assert_eq!(rig.ucm.counter("http_uds_user_ok"), 0);
    let bob = rig.curl(&rig.vmrest(), &["-u", "bob:bob-secret"]);
    assert_eq!(bob.status, 200, "another user is not limited: {}", bob.body);
}

#[test]
fn path_none_needs_no_credentials() {
    if !curl_present("MRA access control") {
        return;
    }
    let rig = Rig::start("authentication_path = \"None\"", &[]);
    let r = rig.curl(&rig.edge_config(), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(rig.curl(&rig.tftp(), &[]).status, 200);
    // The internal server still asks for what it needs.
    assert_eq!(rig.curl(&rig.vmrest(), &[]).status, 401);
    assert_eq!(
        rig.curl(&rig.vmrest(), &["-u", "alice:alice-secret"])
            .status,
        200
    );
    assert_eq!(
        rig.ucm.counter("http_uds_user_ok"),
        0,
        "the core asked nothing"
    );
}
