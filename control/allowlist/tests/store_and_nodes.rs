//! The rules store's JSON (what the core reads) and the automatic rules of table 3.

use edgeway_allowlist::automatic::TEMPLATES;
use edgeway_allowlist::{
    automatic_rules, parse_rules, AllowListError, Method, MethodSet, Node, NodeKind,
    NormalizeError, Origin, Reason, RuleStore,
};

#[test]
fn store_round_trips_and_refuses_what_it_cannot_use() {
    let parsed = parse_rules(
        "Url,Deployment,HttpMethods,MatchType,Description\n\
         https://a.example:8443/x,east,\"GET, PUT\",exact,\"two methods\"\n\
         http://b.example/y,,,,\n",
    );
    let store = RuleStore {
        rules: parsed.rows.into_iter().map(|(_, r)| r).collect(),
        ..RuleStore::default()
    };
    let json = store.to_json();
    assert_eq!(RuleStore::from_json(&json), Ok(store.clone()));
    assert!(
        json.contains("\"GET\""),
        "methods are stored by name: {json}"
    );

    let newer = json.replace("\"version\": 1", "\"version\": 2");
    assert!(
        matches!(RuleStore::from_json(&newer), Err(AllowListError::BadStore(m)) if m.contains("version 2"))
    );
    let automatic = json.replacen(
        "\"origin\": \"editable\"",
        "\"origin\": {\"automatic\": {\"kind\": \"tftp\"}}",
        1,
    );
    assert!(
        matches!(RuleStore::from_json(&automatic), Err(AllowListError::BadStore(m)) if m.contains("automatic"))
    );
    assert!(RuleStore::from_json("[]").is_err());

    // Stored default methods govern the rules on defaults.
    let mut strict = store.clone();
    strict.default_methods = MethodSet::EMPTY;
    let list = strict.allow_list(Vec::new());
    assert_eq!(
        list.decide(None, "GET", "http://b.example/y").reason,
        Reason::MethodNotAllowed
    );
    assert_eq!(
        list.decide(Some("east"), "PUT", "https://a.example:8443/x")
            .reason,
        Reason::Allowed
    );
}

#[test]
fn every_node_kind_gets_its_rows_with_its_ports() {
    let nodes = [
        Node {
            kind: NodeKind::UnifiedCm,
            host: "CUCM1.example.com".into(),
            http_port: None,
            https_port: None,
        },
        Node {
            kind: NodeKind::Tftp,
            host: "10.1.1.1".into(),
            http_port: Some(8080),
            https_port: None,
        },
        Node {
            kind: NodeKind::ImPresence,
            host: "imp.example.com".into(),
            http_port: None,
            https_port: None,
        },
        Node {
            kind: NodeKind::UnityConnection,
            host: "cuc.example.com".into(),
            http_port: None,
            https_port: None,
        },
    ];
    let rules = automatic_rules(&nodes).expect("valid nodes");
    assert_eq!(rules.len(), TEMPLATES.len());
    let urls: Vec<String> = rules.iter().map(|r| r.url.to_string()).collect();
    assert_eq!(
        urls,
        [
            "https://cucm1.example.com:8443/cucm-uds/",
            "http://10.1.1.1:8080/",
            "https://10.1.1.1:6972/",
            "https://imp.example.com:8443/EPASSoap/service/v105",
            "https://cuc.example.com/vmrest/",
        ]
    );
    assert!(rules
        .iter()
        .all(|r| matches!(r.origin, Origin::Automatic { .. }) && r.deployment.is_none()));
    assert_eq!(
        edgeway_allowlist::AllowList::new().methods_of(&rules[3]),
        MethodSet::of(&[Method::Post])
    );

    let bad = [
        nodes[0].clone(),
        Node {
            host: "bad host".into(),
            ..nodes[1].clone()
        },
    ];
    assert_eq!(
        automatic_rules(&bad),
        Err(AllowListError::BadNode {
            index: 1,
            host: "bad host".into(),
            source: NormalizeError::InvalidHost
        })
    );
}
