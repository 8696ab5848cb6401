//! Arbitrary `Replaces` and Refer-To values: parsing never panics; a value that parses
//! re-serializes to one that parses to the same thing; a Refer-To carrying a Replaces
//! rewrites (with a mapped value) to a Refer-To whose Replaces is exactly that value.
#![no_main]

use edgeway_b2bua::{refer_to_replaces, rewrite_refer_to, Replaces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Replaces::parse(text) {
        let again = Replaces::parse(&r.to_string()).expect("a written Replaces parses");
        assert_eq!(again, r);
    }
    if let Ok(Some(r)) = refer_to_replaces(text) {
        let mapped = Replaces {
            call_id: format!("mapped-{}@core", r.to_tag.len()),
            to_tag: "t1".into(),
            from_tag: "f1".into(),
            other: r.other.clone(),
        };
        let rewritten = rewrite_refer_to(text, &mapped).expect("a parsed Refer-To rewrites");
        let back = refer_to_replaces(&rewritten)
            .expect("the rewritten Refer-To parses")
            .expect("and keeps its Replaces");
        assert_eq!(back, mapped, "{rewritten}");
    }
});
