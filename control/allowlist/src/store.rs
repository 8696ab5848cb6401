//! The rules store: the editable rules and default methods as JSON, written by
//! `edgewayctl allowlist upload` and read by the core. This module only converts between the
//! JSON text and the types; reading and writing the file is the caller's.

use serde::{Deserialize, Serialize};

use crate::list::{AllowList, FACTORY_DEFAULT_METHODS};
use crate::method::MethodSet;
use crate::rule::{Origin, Rule};
use crate::AllowListError;

/// The store's format version; a store of another version is refused.
pub const STORE_VERSION: u32 = 1;

/// What the store file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStore {
    /// [`STORE_VERSION`].
    pub version: u32,
    /// The default methods rules on "use defaults" allow.
    pub default_methods: MethodSet,
    /// Editable inbound rules, in upload order.
    pub rules: Vec<Rule>,
}

impl Default for RuleStore {
    fn default() -> Self {
        RuleStore {
            version: STORE_VERSION,
            default_methods: MethodSet::of(&FACTORY_DEFAULT_METHODS),
            rules: Vec::new(),
        }
    }
}

impl RuleStore {
    /// Reads a store from its JSON text; refuses other versions and non-editable rules.
    pub fn from_json(text: &str) -> Result<Self, AllowListError> {
        let store: RuleStore =
            serde_json::from_str(text).map_err(|e| AllowListError::BadStore(e.to_string()))?;
        if store.version != STORE_VERSION {
            return Err(AllowListError::BadStore(format!(
                "version {} (this build reads version {STORE_VERSION})",
                store.version
            )));
        }
        if store.rules.iter().any(|r| r.origin != Origin::Editable) {
            return Err(AllowListError::BadStore(
                "automatic rules cannot be stored; they come from discovery".into(),
            ));
        }
        Ok(store)
    }

    /// The store as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail (no maps with non-string keys).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// An allow list of `automatic` rules followed by this store's rules and defaults.
    pub fn allow_list(&self, automatic: Vec<Rule>) -> AllowList {
        let mut list = AllowList::new();
        list.extend(automatic);
        list.extend(self.rules.iter().cloned());
        list.set_default_methods(self.default_methods);
        list
    }
}
