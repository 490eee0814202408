//! htpasswd users (bcrypt only, as `htpasswd -B` writes them).
//!
//! bcrypt is deliberately slow (~70 ms here) and docker sends Basic credentials
//! on every request, so: checks run on the blocking pool, never on an async
//! worker, at most one per core at a time (a flood of wrong passwords
//! queues as cheap futures instead of growing the blocking pool to hundreds
//! of threads that starve every other blocking task); and a successful check is remembered for a short while, keyed by a
//! salted SHA-256 of user and password (never the password itself), so a push
//! of many layers pays for bcrypt once. The file is re-read when it changes.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use sha2::{Digest as _, Sha256};

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
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

pub struct Htpasswd {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    salt: [u8; 32],
    /// A valid hash to check unknown users against, so that "no such user"
    /// takes as long as "wrong password".
    dummy: String,
    /// bcrypt checks allowed to run at once.
    bcrypt_slots: tokio::sync::Semaphore,
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
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            return Err(invalid(&format!(
                "user {user:?}: only bcrypt hashes are supported (htpasswd -B)"
            )));
        }
        if hash
            .replacen("$2y$", "$2b$", 1)
            .parse::<bcrypt::HashParts>()
            .is_err()
        {
            return Err(invalid(&format!("user {user:?}: malformed bcrypt hash")));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

impl Htpasswd {
    /// Load the file; an unreadable file or a non-bcrypt entry is an error.
    pub fn load(path: &str) -> Result<Htpasswd, HtpasswdError> {
        let pb = PathBuf::from(path);
        let text = std::fs::read_to_string(&pb).map_err(|err| HtpasswdError::Read {
            path: path.into(),
            err,
        })?;
        let users = parse(path, &text)?;
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        Ok(Htpasswd {
            loaded: Mutex::new(Loaded {
                users,
                stamp: stamp(&pb),
                checked: Instant::now(),
            }),
            path: pb,
            remembered: Mutex::new(HashMap::new()),
            salt,
            dummy: bcrypt::hash("dummy", 10).expect("bcrypt hash"),
            bcrypt_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
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
                loaded.users = users;
                loaded.stamp = now;
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

    /// Does `password` match `user`'s entry?
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        // bcrypt stops at a NUL byte in some implementations: never let one through.
        if password.contains('\0') || user.contains('\0') || password.len() > 72 {
            return false;
        }
        self.refresh();
        let key = self.key(user, password);
        if let Some(at) = self.remembered.lock().unwrap().get(&key) {
            if at.elapsed() < REMEMBER {
                return true;
            }
        }
        let hash = self.loaded.lock().unwrap().users.get(user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let password = password.to_string();
        // Never closed, so acquiring only waits.
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
                && known;
        if ok {
            let mut remembered = self.remembered.lock().unwrap();
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(key, Instant::now());
        }
        ok
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
}
