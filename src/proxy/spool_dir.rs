//! Where this process spools blobs being fetched: a directory of its own
//! under `proxy.spooldir`, locked (`flock`) for as long as the process
//! lives. A spool is removed when its last reader lets go, but a process
//! killed mid-fetch (OOM, a node lost, SIGKILL) never gets there: its
//! partial blobs would stay on disk for good. So at start every other
//! process's directory whose lock is free — its owner is gone, whatever its
//! PID namespace — is removed. Replicas may share the parent directory.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Names of claimed directories; the sweep touches nothing else.
const PREFIX: &str = "berth-proxy-spool-";
/// A directory being claimed: named so only once its lock is held.
const CLAIMING: &str = ".berth-proxy-claiming-";
const LOCK: &str = ".lock";

/// This process's spool directory, removed when dropped.
pub struct SpoolDir {
    path: PathBuf,
    /// Held open: the lock lasts as long as the descriptor.
    _lock: File,
}

/// Take an exclusive `flock` on `file` without waiting; false if another
/// process holds it.
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this `File` owns and keeps open.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl SpoolDir {
    /// Claim a directory under `parent` (created if missing), after
    /// sweeping the directories of processes that are gone.
    pub fn claim(parent: &Path) -> std::io::Result<SpoolDir> {
        std::fs::create_dir_all(parent)?;
        let swept = sweep(parent);
        if swept > 0 {
            tracing::info!(
                dir = %parent.display(),
                swept,
                "proxy: removed the spools of processes that ended mid-fetch"
            );
        }
        // Locked under a temporary name, then renamed: a directory with the
        // final name and a free lock is always a dead process's.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let claiming = parent.join(format!("{CLAIMING}{id}"));
        std::fs::create_dir(&claiming)?;
        let lock = File::create(claiming.join(LOCK))?;
        if !try_lock(&lock) {
            return Err(std::io::Error::other("cannot lock a fresh spool directory"));
        }
        let path = parent.join(format!("{PREFIX}{id}"));
        std::fs::rename(&claiming, &path)?;
        Ok(SpoolDir { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Remove the claimed directories under `parent` whose lock nobody holds;
/// how many.
fn sweep(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            continue;
        };
        if try_lock(&lock) && std::fs::remove_dir_all(&dir).is_ok() {
            swept += 1;
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_claim_is_kept_and_a_dead_one_swept() {
        let parent = tempfile::tempdir().unwrap();
        let live = SpoolDir::claim(parent.path()).unwrap();
        std::fs::write(live.path().join("spool"), b"partial").unwrap();
        // A dead process's directory: claimed name, lock file nobody holds.
        let dead = parent.path().join(format!("{PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        std::fs::write(dead.join("spool"), b"partial").unwrap();
        // Something else in the parent directory is not ours to remove.
        std::fs::write(parent.path().join("other"), b"x").unwrap();

        let next = SpoolDir::claim(parent.path()).unwrap();
        assert!(!dead.exists(), "the dead process's spools are swept");
        assert!(live.path().join("spool").exists(), "a live claim is kept");
        assert!(parent.path().join("other").exists());
        let next_path = next.path().to_path_buf();
        drop(next);
        assert!(!next_path.exists(), "a claim is removed when dropped");
    }
}
