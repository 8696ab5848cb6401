//! The user database: who may register, with which password, number and phone security
//! profile.
//!
//! Loaded from a TOML file (`[[user]]` tables) or generated (`user0001`..) for load tests.
//! Lookups accept the user name or the directory number, because Unified CM lines are
//! addressed by number (`sip:1001@domain`) while digest credentials carry the user id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::UcmSimError;

/// A phone security profile: whether the user's device signals over TLS and uses SRTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityProfile {
    /// Encrypted: SIP over TLS and SRTP.
    #[default]
    Secure,
    /// Non-secure: SIP over TCP (or TLS) and RTP.
    NonSecure,
}

/// What answers a user's line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhoneKind {
    /// A real client that registers (calls go to its binding).
    #[default]
    Registered,
    /// A simulated inside phone: ucm-sim answers, places calls and sends media itself.
    Sim,
}

/// One user (an end user with one line and its devices).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User id, the digest username (`alice`).
    pub name: String,
    /// Digest password.
    pub password: String,
    /// Directory number of the user's line (`1001`).
    pub number: String,
    /// The phone security profile of the user's devices.
    pub security_profile: SecurityProfile,
    /// Device names (`CSFALICE`); informational for now.
    #[serde(default)]
    pub devices: Vec<String>,
    /// `phone = "sim"`: a simulated inside phone answered by ucm-sim itself.
    #[serde(default)]
    pub phone: PhoneKind,
    /// Calls to this user get 486 Busy Here (the admin `answer_mode` changes it).
    #[serde(default)]
    pub busy: bool,
    /// The phone security profile's "Enable Digest Authentication": INVITEs from this user
    /// are challenged (407 Proxy-Authenticate), as Unified CM challenges every request of a
    /// device whose profile has it. Off (the default), Unified CM trusts the registered
    /// device and does not challenge its INVITEs.
    #[serde(default)]
    pub digest_authentication: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<User>,
}

/// The users, indexed by name and by number.
#[derive(Debug, Clone, Default)]
pub struct UserDirectory {
    users: Vec<User>,
    by_name: HashMap<String, usize>,
    by_number: HashMap<String, usize>,
}

impl UserDirectory {
    /// A directory of the given users; names and numbers must be unique and non-empty.
    pub fn new(users: Vec<User>) -> Result<UserDirectory, UcmSimError> {
        let mut dir = UserDirectory::default();
        for user in users {
            dir.insert(user)?;
        }
        Ok(dir)
    }

    /// Parses a users file (TOML, `[[user]]` tables).
    pub fn from_toml(text: &str) -> Result<UserDirectory, UcmSimError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|e| UcmSimError::UsersFile(e.to_string()))?;
        UserDirectory::new(file.user)
    }

    /// `count` users `user0001`.. with passwords `<prefix>0001`.., numbers from 100001, all
    /// with the given profile: the load generator derives the same credentials.
    pub fn generated(
        count: usize,
        password_prefix: &str,
        profile: SecurityProfile,
    ) -> UserDirectory {
        let mut dir = UserDirectory::default();
        for i in 1..=count {
            let user = User {
                name: generated_name(i),
                password: format!("{password_prefix}{i:04}"),
                number: (100_000 + i).to_string(),
                security_profile: profile,
                ..User::default()
            };
            // Generated names and numbers are distinct by construction.
            let _ = dir.insert(user);
        }
        dir
    }

    /// Adds a user; refuses a duplicate name or number.
    pub fn insert(&mut self, user: User) -> Result<(), UcmSimError> {
        if user.name.is_empty() || user.number.is_empty() {
            return Err(UcmSimError::UsersFile(format!(
                "user {:?}: name and number must not be empty",
                user.name
            )));
        }
        if self.by_name.contains_key(&user.name) || self.by_number.contains_key(&user.name) {
            return Err(UcmSimError::UsersFile(format!(
                "user name {:?} is used twice",
                user.name
            )));
        }
        if self.by_number.contains_key(&user.number) || self.by_name.contains_key(&user.number) {
            return Err(UcmSimError::UsersFile(format!(
                "number {:?} (user {:?}) is used twice",
                user.number, user.name
            )));
        }
        let i = self.users.len();
        self.by_name.insert(user.name.clone(), i);
        self.by_number.insert(user.number.clone(), i);
        self.users.push(user);
        Ok(())
    }

    /// The user called `name_or_number` (user id or directory number).
    pub fn find(&self, name_or_number: &str) -> Option<&User> {
        self.by_name
            .get(name_or_number)
            .or_else(|| self.by_number.get(name_or_number))
            .map(|&i| &self.users[i])
    }

    /// Sets the busy flag of `name_or_number`; `false` when there is no such user.
    pub fn set_busy(&mut self, name_or_number: &str, busy: bool) -> bool {
        let i = self
            .by_name
            .get(name_or_number)
            .or_else(|| self.by_number.get(name_or_number))
            .copied();
        match i {
            Some(i) => {
                self.users[i].busy = busy;
                true
            }
            None => false,
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// `true` when there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user, in insertion order.
    pub fn iter(&self) -> std::slice::Iter<'_, User> {
        self.users.iter()
    }
}

/// The name of generated user `i` (1-based): `user0001`, ..., `user15000`.
pub fn generated_name(i: usize) -> String {
    format!("user{i:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_file_and_finds_by_name_or_number() {
        let dir = UserDirectory::from_toml(
            r#"
            [[user]]
            name = "alice"
            password = "s3cret"
            number = "1001"
            security_profile = "secure"
            devices = ["CSFALICE"]
            [[user]]
            name = "bob"
            password = "pw"
            number = "1002"
            security_profile = "non-secure"
            "#,
        )
        .expect("valid file");
        assert_eq!(dir.len(), 2);
        let alice = dir.find("1001").expect("by number");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.security_profile, SecurityProfile::Secure);
        assert_eq!(alice.devices, ["CSFALICE"]);
        assert_eq!(
            dir.find("bob").map(|u| u.security_profile),
            Some(SecurityProfile::NonSecure)
        );
        assert!(dir.find("carol").is_none());
    }

    #[test]
    fn refuses_duplicates_and_unknown_fields() {
        let dup = r#"
            [[user]]
            name = "alice"
            password = "a"
            number = "1001"
            security_profile = "secure"
            [[user]]
            name = "al"
            password = "b"
            number = "1001"
            security_profile = "secure"
        "#;
        let err = UserDirectory::from_toml(dup).expect_err("duplicate number");
        assert!(err.to_string().contains("1001"), "{err}");
        let typo = "[[user]]\nname=\"a\"\npassword=\"b\"\nnumber=\"1\"\nsecurity_profile=\"secure\"\npasword=\"x\"\n";
        let err = UserDirectory::from_toml(typo).expect_err("unknown field");
        assert!(err.to_string().contains("pasword"), "{err}");
        let bad_profile =
            "[[user]]\nname=\"a\"\npassword=\"b\"\nnumber=\"1\"\nsecurity_profile=\"maybe\"\n";
        assert!(UserDirectory::from_toml(bad_profile).is_err());
    }

    #[test]
    fn generates_predictable_users() {
        let dir = UserDirectory::generated(15_000, "pw", SecurityProfile::Secure);
        assert_eq!(dir.len(), 15_000);
        let u = dir.find("user0042").expect("generated");
        assert_eq!(u.password, "pw0042");
        assert_eq!(u.number, "100042");
        assert_eq!(
            dir.find("user15000").map(|u| u.number.as_str()),
            Some("115000")
        );
    }
}
