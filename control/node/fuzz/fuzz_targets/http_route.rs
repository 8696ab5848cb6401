//! The HTTP path router (`edgeway_control::http::route`) and the allow list behind it, on
//! arbitrary request paths: never a panic; a decoded domain is always a plain lower-case
//! name; a tunnelled URL always names the scheme, host and port it was given; and whatever
//! the allow list lets through is on the one host and port its rules name.
#![no_main]

use edgeway_allowlist::{automatic_rules, AllowList, Node, NodeKind};
use edgeway_control::http::route::{self, EdgeConfigDoc, Route, Server};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match route::parse(path) {
        Ok(Route::EdgeConfig { domain }) => {
            assert!(!domain.is_empty());
            assert!(domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')));
            let doc = EdgeConfigDoc {
                sip_edge: Some(Server {
                    address: domain.clone(),
                    port: 5061,
                }),
                http_edge: Server {
                    address: domain,
                    port: 8443,
                },
                uds: vec![],
                tftp: vec![],
            };
            assert!(doc.to_xml().ends_with("</getEdgeConfigResponse>\n"));
        }
        Ok(Route::Tunnel { url, .. }) => {
            assert!(url.starts_with("http://") || url.starts_with("https://"));
            let mut list = AllowList::new();
            let nodes = [Node {
                kind: NodeKind::UnifiedCm,
                host: "cucm.example.com".into(),
                http_port: None,
                https_port: Some(8443),
            }];
            list.extend(automatic_rules(&nodes).expect("a valid node"));
            let decision = list.decide(None, "GET", &url);
            if decision.allowed {
                let target = decision.url.expect("an allowed request has a URL");
                assert_eq!(target.host, "cucm.example.com");
                assert_eq!(target.port, 8443);
                assert!(target.path.starts_with("/cucm-uds/"), "{target}");
            }
        }
        Err(_) => {}
    }
});
