//! Who may log in: static `users` (bcrypt hashes in the config), then the
//! `htpasswd` file (reusing [`Htpasswd`]: off-thread bcrypt, remembered
//! successes, reload on change).
//!
//! A refresh token must stop working when its account is removed or its
//! password changes, without any shared state: it carries a fingerprint of
//! the account's current hash, recomputed when the token is used.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::{
    auth::htpasswd::{self, Htpasswd},
    config::token_server::TokenServerConfig,
};

/// Default bcrypt cost for the stand-in hash when no static user says otherwise.
const DEFAULT_COST: u32 = 10;

/// A bcrypt hash as `htpasswd -B` or the `bcrypt` crate write it.
pub fn check_bcrypt(hash: &str) -> Result<(), String> {
    if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
        return Err("only bcrypt hashes are supported (htpasswd -B)".into());
    }
    normalise(hash)
        .parse::<bcrypt::HashParts>()
        .map(|_| ())
        .map_err(|_| "malformed bcrypt hash".into())
}

/// The bcrypt crate reads `$2b$`; `$2y$` and `$2a$` are the same algorithm.
fn normalise(hash: &str) -> String {
    format!("$2b${}", hash.get(4..).unwrap_or(""))
}

pub struct Accounts {
    users: BTreeMap<String, String>,
    htpasswd: Option<(String, Htpasswd)>,
    /// A valid hash to check unknown users against when there is no htpasswd
    /// file (which has its own), so that "no such user" takes as long as
    /// "wrong password".
    dummy: Option<String>,
    /// bcrypt checks of static users allowed at once (the htpasswd file's
    /// checks have their own cap): a flood of logins queues as futures.
    bcrypt_slots: tokio::sync::Semaphore,
}

/// bcrypt ignores what follows a NUL or the 72nd byte: refuse both.
fn acceptable(user: &str, password: &str) -> bool {
    !password.contains('\0') && !user.contains('\0') && password.len() <= 72
}

impl Accounts {
    pub fn new(cfg: &TokenServerConfig) -> Result<Accounts, String> {
        let users = cfg
            .users
            .iter()
            .map(|(u, h)| (u.clone(), normalise(h)))
            .collect::<BTreeMap<_, _>>();
        let htpasswd = if cfg.htpasswd.is_empty() {
            None
        } else {
            let h =
                Htpasswd::load(&cfg.htpasswd).map_err(|e| format!("token_server.htpasswd: {e}"))?;
            Some((cfg.htpasswd.clone(), h))
        };
        let dummy = if htpasswd.is_none() {
            let cost = users
                .values()
                .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
                .map(|p| p.get_cost())
                .max()
                .unwrap_or(DEFAULT_COST);
            Some(bcrypt::hash("dummy", cost).map_err(|e| format!("bcrypt: {e}"))?)
        } else {
            None
        };
        Ok(Accounts {
            users,
            htpasswd,
            dummy,
            bcrypt_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        })
    }

    /// Does `password` match `user`? bcrypt runs on the blocking pool.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        if !acceptable(user, password) || user.is_empty() {
            return false;
        }
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => match &self.htpasswd {
                Some((_, h)) => return h.verify(user, password).await,
                None => (self.dummy.clone().unwrap_or_default(), false),
            },
        };
        let password = password.to_string();
        // Never closed, so acquiring only waits.
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
            && known
    }

    /// A fingerprint of `user`'s current hash; None if there is no such user
    /// (any more). Reads the htpasswd file: used once per refresh grant.
    pub fn fingerprint(&self, user: &str) -> Option<String> {
        let hash = match self.users.get(user) {
            Some(h) => h.clone(),
            None => {
                let (path, _) = self.htpasswd.as_ref()?;
                let text = std::fs::read_to_string(path).ok()?;
                match htpasswd::parse(path, &text) {
                    Ok(users) => normalise(users.get(user)?),
                    Err(e) => {
                        tracing::error!(error = %e, "token server: htpasswd unreadable for a refresh");
                        return None;
                    }
                }
            }
        };
        let mut h = Sha256::new();
        h.update(b"berth-refresh\0");
        h.update(user.as_bytes());
        h.update(b"\0");
        h.update(hash.as_bytes());
        Some(hex::encode(&h.finalize()[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_users() {
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let cfg = TokenServerConfig {
            users: [("alice".to_string(), hash.clone())].into(),
            ..Default::default()
        };
        let a = Accounts::new(&cfg).unwrap();
        assert!(a.verify("alice", "s3cret").await);
        assert!(!a.verify("alice", "wrong").await);
        assert!(!a.verify("bob", "s3cret").await);
        assert!(!a.verify("alice", "s3cret\0tail").await);
        let f = a.fingerprint("alice").unwrap();
        assert_eq!(f.len(), 32);
        assert_eq!(a.fingerprint("bob"), None);

        // Another hash of the same password: a different fingerprint, so a
        // password change revokes refresh tokens.
        let cfg2 = TokenServerConfig {
            users: [("alice".to_string(), bcrypt::hash("s3cret", 4).unwrap())].into(),
            ..Default::default()
        };
        assert_ne!(
            Accounts::new(&cfg2).unwrap().fingerprint("alice").unwrap(),
            f
        );
    }

    #[test]
    fn bcrypt_only() {
        assert!(check_bcrypt(&bcrypt::hash("x", 4).unwrap()).is_ok());
        assert!(check_bcrypt("$apr1$abc$def").is_err());
        assert!(check_bcrypt("$2y$04$short").is_err());
    }
}
