//! Who may log in: static `users` (bcrypt hashes in the config), then the
//! `htpasswd` file (reusing [`Htpasswd`]: off-thread bcrypt, remembered
//! successes, reload on change).
//!
//! A refresh token must stop working when its account is removed or its
//! password changes, without any shared state: it carries a fingerprint of
//! the account's current hash, recomputed when the token is used.

use std::{collections::BTreeMap, sync::Arc};

use sha2::{Digest as _, Sha256};

use crate::{
    auth::{
        bcrypt_queue::{self, normalise, BcryptQueue, Busy},
        htpasswd::{self, Htpasswd},
    },
    config::token_server::TokenServerConfig,
};

pub struct Accounts {
    users: BTreeMap<String, String>,
    htpasswd: Option<(String, Htpasswd)>,
    /// A hash at the static users' typical cost, checked for unknown users
    /// when there is no htpasswd file (which has its own), so that "no such
    /// user" takes as long as "wrong password".
    stand_in: String,
    /// Shared with every other password check of this process.
    queue: Arc<BcryptQueue>,
}

/// bcrypt ignores what follows a NUL or the 72nd byte: refuse both.
fn acceptable(user: &str, password: &str) -> bool {
    !password.contains('\0') && !user.contains('\0') && password.len() <= 72
}

impl Accounts {
    /// Checks the static users' hashes and loads the htpasswd file; errors
    /// name the key.
    pub fn new(cfg: &TokenServerConfig, queue: Arc<BcryptQueue>) -> Result<Accounts, String> {
        for (user, hash) in &cfg.users {
            bcrypt_queue::check_bcrypt(hash)
                .map_err(|e| format!("token_server.users.{user}: {e}"))?;
        }
        let users = cfg
            .users
            .iter()
            .map(|(u, h)| (u.clone(), normalise(h)))
            .collect::<BTreeMap<_, _>>();
        let htpasswd = if cfg.htpasswd.is_empty() {
            None
        } else {
            let h = Htpasswd::load(&cfg.htpasswd, queue.clone())
                .map_err(|e| format!("token_server.htpasswd: {e}"))?;
            Some((cfg.htpasswd.clone(), h))
        };
        let cost = bcrypt_queue::typical_cost(users.values().map(String::as_str));
        Ok(Accounts {
            users,
            htpasswd,
            stand_in: bcrypt_queue::stand_in(cost),
            queue,
        })
    }

    /// No static users and no htpasswd file (logins go to the directory).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.htpasswd.is_none()
    }

    /// Does `password` match `user`? Err when the bcrypt queue is full.
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, Busy> {
        if !acceptable(user, password) || user.is_empty() {
            return Ok(false);
        }
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h, true),
            None => match &self.htpasswd {
                Some((_, h)) => return h.verify(user, password).await,
                None => (&self.stand_in, false),
            },
        };
        Ok(self.queue.verify(password, hash).await? && known)
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

    fn queue() -> Arc<BcryptQueue> {
        Arc::new(BcryptQueue::new(8))
    }

    #[tokio::test]
    async fn static_users() {
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let cfg = TokenServerConfig {
            users: [("alice".to_string(), hash.clone())].into(),
            ..Default::default()
        };
        let a = Accounts::new(&cfg, queue()).unwrap();
        assert_eq!(a.verify("alice", "s3cret").await, Ok(true));
        assert_eq!(a.verify("alice", "wrong").await, Ok(false));
        assert_eq!(a.verify("bob", "s3cret").await, Ok(false));
        assert_eq!(a.verify("alice", "s3cret\0tail").await, Ok(false));
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
            Accounts::new(&cfg2, queue())
                .unwrap()
                .fingerprint("alice")
                .unwrap(),
            f
        );
    }

    #[test]
    fn static_hashes_are_checked_at_load() {
        let cfg = TokenServerConfig {
            users: [("bob".to_string(), "plain".to_string())].into(),
            ..Default::default()
        };
        let e = Accounts::new(&cfg, queue()).err().unwrap();
        assert!(e.starts_with("token_server.users.bob: "), "{e}");
    }

    #[test]
    fn unknown_users_cost_what_static_ones_do() {
        let cfg = TokenServerConfig {
            users: [("alice".to_string(), bcrypt::hash("pw", 5).unwrap())].into(),
            ..Default::default()
        };
        let a = Accounts::new(&cfg, queue()).unwrap();
        let cost = a.stand_in.parse::<bcrypt::HashParts>().unwrap().get_cost();
        assert_eq!(cost, 5);
    }
}
