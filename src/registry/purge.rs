//! Upload purging: remove uploads abandoned for longer than an age
//! (`storage.maintenance.uploadpurging`). Each upload's `startedat` file (RFC
//! 3339, as distribution writes it) says when it began; deleting the upload's
//! directory also aborts whatever the driver keeps for it (S3 multipart parts).

use std::time::{Duration, SystemTime};

use super::{error::Result, Registry};
use crate::storage::layout;

/// What one purge pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub examined: usize,
    /// Removed, or that would be with `dry_run`.
    pub purged: usize,
}

impl Registry {
    /// Every `_uploads/<id>` directory under every repository.
    async fn upload_dirs(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut stack = vec![layout::repositories_root()];
        while let Some(dir) = stack.pop() {
            let children = match self.driver.list(&dir).await {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for child in children {
                match layout::base_name(&child) {
                    "_uploads" => match self.driver.list(&child).await {
                        Ok(ids) => found.extend(ids),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    },
                    base if base.starts_with('_') => {}
                    _ => stack.push(child),
                }
            }
        }
        Ok(found)
    }

    /// One pass: remove uploads started more than `age` ago (or, with
    /// `dry_run`, only report them). An upload whose start time cannot be read
    /// is judged by its directory's modification time.
    pub async fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<PurgeReport> {
        let now = SystemTime::now();
        let mut report = PurgeReport::default();
        for dir in self.upload_dirs().await? {
            report.examined += 1;
            let started = match self.driver.get_content(&format!("{dir}/startedat")).await {
                Ok(b) => std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok()),
                Err(_) => None,
            };
            let started = match started {
                Some(t) => t,
                None => match self.driver.stat(&dir).await {
                    Ok(info) => info.modified,
                    Err(_) => continue,
                },
            };
            if now.duration_since(started).unwrap_or_default() < age {
                continue;
            }
            report.purged += 1;
            if dry_run {
                tracing::info!(upload = %dir, "upload purging (dry run): would remove");
            } else {
                self.delete_if_exists(&dir).await?;
                tracing::info!(upload = %dir, "upload purging: removed");
            }
        }
        Ok(report)
    }
}
