//! Arbitrary text as a users file and as a `--config` file: errors, never panics; what
//! loads must be consistent (every user found by name and by number).
#![no_main]

use edgeway_ucm_sim::{Settings, UserDirectory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(dir) = UserDirectory::from_toml(text) {
        for u in dir.iter() {
            assert_eq!(dir.find(&u.name).map(|f| &f.name), Some(&u.name));
            assert_eq!(dir.find(&u.number).map(|f| &f.name), Some(&u.name));
        }
    }
    if let Ok(s) = Settings::from_toml(text) {
        if let Ok(cfg) = s.registrar_config() {
            assert!(cfg.min_expires <= cfg.max_expires);
            assert!((cfg.min_expires..=cfg.max_expires).contains(&cfg.default_expires));
        }
    }
});
