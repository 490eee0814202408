//! htpasswd users (bcrypt only, as `htpasswd -B` writes them).
//!
//! bcrypt is deliberately slow (~70 ms at cost 10) and docker sends Basic
//! credentials on every request, so checks wait in the shared, bounded
//! [`BcryptQueue`], and a successful check is remembered for a short while,
//! keyed by a salted SHA-256 of user and password (never the password
//! itself), so a push of many layers pays for bcrypt once. The file is
//! re-read when it changes.
//!
//! A user that is not in the file is checked against a stand-in hash at the
//! cost most entries use, so "no such user" takes as long as "wrong
//! password" and the timing tells nobody which names exist.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use sha2::{Digest as _, Sha256};

use super::bcrypt_queue::{self, BcryptQueue, Busy};

/// How long a verified user:password stays trusted without a bcrypt check.
const REMEMBER: Duration = Duration::from_secs(60);
/// How often, at most, the file's metadata is checked for changes.
const RECHECK: Duration = Duration::from_secs(1);
/// Bound on remembered checks; the map is simply cleared when full.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("htpasswd file {path} line {line}: {why}")]
    Invalid {
        path: String,
        line: usize,
        why: String,
    },
}

struct Loaded {
    users: HashMap<String, String>,
    /// Checked for unknown users: a hash at the entries' typical cost.
    stand_in: String,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

impl Loaded {
    fn new(users: HashMap<String, String>, stamp: Option<(SystemTime, u64)>) -> Loaded {
        let cost = bcrypt_queue::typical_cost(users.values().map(String::as_str));
        Loaded {
            users,
            stand_in: bcrypt_queue::stand_in(cost),
            stamp,
            checked: Instant::now(),
        }
    }
}

pub struct Htpasswd {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    salt: [u8; 32],
    queue: Arc<BcryptQueue>,
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

/// Parse `user:hash` lines; anything but bcrypt is refused.
pub fn parse(path: &str, text: &str) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |why: &str| HtpasswdError::Invalid {
            path: path.to_string(),
            line: i + 1,
            why: why.to_string(),
        };
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| invalid("expected user:hash"))?;
        bcrypt_queue::check_bcrypt(hash).map_err(|e| invalid(&format!("user {user:?}: {e}")))?;
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

impl Htpasswd {
    /// Load the file; an unreadable file or a non-bcrypt entry is an error.
    /// Checks wait in `queue`.
    pub fn load(path: &str, queue: Arc<BcryptQueue>) -> Result<Htpasswd, HtpasswdError> {
        let pb = PathBuf::from(path);
        let text = std::fs::read_to_string(&pb).map_err(|err| HtpasswdError::Read {
            path: path.into(),
            err,
        })?;
        let users = parse(path, &text)?;
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        Ok(Htpasswd {
            loaded: Mutex::new(Loaded::new(users, stamp(&pb))),
            path: pb,
            remembered: Mutex::new(HashMap::new()),
            salt,
            queue,
        })
    }

    /// Re-read the file if it changed; a broken new version keeps the old one.
    fn refresh(&self) {
        let mut loaded = self.loaded.lock().unwrap();
        if loaded.checked.elapsed() < RECHECK {
            return;
        }
        loaded.checked = Instant::now();
        let now = stamp(&self.path);
        if now == loaded.stamp {
            return;
        }
        let path = self.path.display().to_string();
        match std::fs::read_to_string(&self.path)
            .map_err(|err| HtpasswdError::Read {
                path: path.clone(),
                err,
            })
            .and_then(|t| parse(&path, &t))
        {
            Ok(users) => {
                tracing::info!(path = %path, users = users.len(), "htpasswd file reloaded");
                *loaded = Loaded::new(users, now);
                self.remembered.lock().unwrap().clear();
            }
            Err(e) => {
                tracing::error!(error = %e, "htpasswd file changed but is invalid; keeping the previous users")
            }
        }
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether this user and password passed a check a moment ago: no
    /// bcrypt needed (and none spent on a guess, which never passed).
    /// (Re-reads the file first if it changed: a reload forgets.)
    pub fn remembered(&self, user: &str, password: &str) -> bool {
        self.refresh();
        let key = self.key(user, password);
        self.remembered
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|at| at.elapsed() < REMEMBER)
    }

    /// Does `password` match `user`'s entry? Err when the bcrypt queue is
    /// full and nothing was checked.
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, Busy> {
        // bcrypt stops at a NUL byte in some implementations: never let one through.
        if password.contains('\0') || user.contains('\0') || password.len() > 72 {
            return Ok(false);
        }
        if self.remembered(user, password) {
            return Ok(true);
        }
        let (hash, known) = {
            let loaded = self.loaded.lock().unwrap();
            match loaded.users.get(user) {
                Some(h) => (h.clone(), true),
                None => (loaded.stand_in.clone(), false),
            }
        };
        let ok = self
            .queue
            .verify(password, &bcrypt_queue::normalise(&hash))
            .await?
            && known;
        if ok {
            let mut remembered = self.remembered.lock().unwrap();
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(self.key(user, password), Instant::now());
        }
        Ok(ok)
    }

    /// The cost an unknown user's check takes.
    #[cfg(test)]
    fn stand_in_cost(&self) -> u32 {
        let loaded = self.loaded.lock().unwrap();
        loaded
            .stand_in
            .parse::<bcrypt::HashParts>()
            .unwrap()
            .get_cost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_bcrypt() {
        assert!(parse("f", "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").is_err());
        assert!(parse("f", "alice:$apr1$abc$def").is_err());
        assert!(parse("f", "alice").is_err());
        let h = bcrypt::hash("pw", 4).unwrap().replacen("$2b$", "$2y$", 1);
        let users = parse("f", &format!("# comment\n\nalice:{h}\n")).unwrap();
        assert_eq!(users.len(), 1);
    }

    fn entry(user: &str, password: &str, cost: u32) -> String {
        let h = bcrypt::hash(password, cost).unwrap();
        format!("{user}:{}\n", h.replacen("$2b$", "$2y$", 1))
    }

    /// An unknown user is checked at the cost the file's entries use — not a
    /// fixed one that would tell it apart from `htpasswd -B`'s cost 5 — and
    /// the cost follows the file when it is rewritten.
    #[tokio::test]
    async fn unknown_users_cost_what_known_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        let text = [entry("a", "x", 5), entry("b", "y", 5), entry("c", "z", 4)].concat();
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        let h = Htpasswd::load(path, Arc::new(BcryptQueue::new(8))).unwrap();
        assert_eq!(h.stand_in_cost(), 5);
        assert_eq!(h.verify("a", "x").await, Ok(true));
        assert_eq!(h.verify("nobody", "x").await, Ok(false));
        assert_eq!(h.verify("a", "wrong").await, Ok(false));
        assert!(h.remembered("a", "x") && !h.remembered("a", "wrong"));

        // Rewritten with cost-6 entries (size changes, so the stamp does).
        std::fs::write(&file, [entry("a", "x", 6), entry("bb", "y", 6)].concat()).unwrap();
        h.loaded.lock().unwrap().checked = Instant::now() - RECHECK * 2;
        h.refresh();
        assert_eq!(h.stand_in_cost(), 6);
        assert!(!h.remembered("a", "x"), "a reload forgets");
    }
}
