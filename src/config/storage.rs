//! `storage:` — distribution's shape: exactly one driver section plus the
//! shared `delete`, `redirect`, `cache` and `maintenance` parameters.

use serde::{Deserialize, Serialize};

pub use super::azure::{AzureConfig, AzureSettings};
use super::compat::{TagSection, Tolerated};
pub use super::s3::S3Config;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub filesystem: Option<FilesystemConfig>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub inmemory: Option<InMemoryConfig>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub s3: Option<S3Config>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub azure: Option<AzureConfig>,
    #[serde(default)]
    pub delete: DeleteConfig,
    #[serde(default)]
    pub redirect: RedirectConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// distribution's; not acted on (see `compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagSection>,
    /// Berth's own: memory for S3/Azure upload buffers, see [`UploadBuffersConfig`].
    #[serde(default)]
    pub uploadbuffers: UploadBuffersConfig,
}

/// `storage.uploadbuffers`: the memory one replica lets the S3 and Azure
/// writers buffer upload data in, shared by every upload in flight
/// (`REGISTRY_STORAGE_UPLOADBUFFERS_BUDGET`, `..._WAIT`). An upload request
/// that finds it spent waits up to `wait`, then gets 503 with `Retry-After`.
/// The filesystem and inmemory drivers do not buffer and ignore it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadBuffersConfig {
    /// Bytes (a number, also written as a string): 512 MiB unless set.
    #[serde(deserialize_with = "super::s3::number")]
    pub budget: u64,
    /// A duration such as `30s` or `2m`.
    pub wait: String,
}

/// The smallest budget: a few 5 MiB S3 parts.
pub const MIN_UPLOAD_BUDGET: u64 = 16 << 20;

impl Default for UploadBuffersConfig {
    fn default() -> Self {
        UploadBuffersConfig {
            budget: crate::storage::budget::DEFAULT_BUDGET,
            wait: humantime::format_duration(crate::storage::budget::DEFAULT_WAIT).to_string(),
        }
    }
}

impl UploadBuffersConfig {
    /// (budget in bytes, wait), validated; errors name the key.
    pub fn settings(&self) -> Result<(u64, std::time::Duration), String> {
        if self.budget < MIN_UPLOAD_BUDGET {
            return Err(format!(
                "storage.uploadbuffers.budget: {} is below the minimum {MIN_UPLOAD_BUDGET} (16 MiB)",
                self.budget
            ));
        }
        let wait = humantime::parse_duration(self.wait.trim())
            .map_err(|e| format!("storage.uploadbuffers.wait: {:?}: {e}", self.wait))?;
        Ok((self.budget, wait))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    #[serde(default = "default_root")]
    pub rootdirectory: String,
    /// distribution's; not acted on (see `compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxthreads: Tolerated,
}

/// `storage.inmemory` takes no parameters.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InMemoryConfig {}

/// A driver key given with no parameters (`inmemory:`) still selects the driver.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            rootdirectory: default_root(),
            maxthreads: None,
        }
    }
}

fn default_root() -> String {
    // distribution's default when `filesystem:` is given without a root.
    "/var/lib/registry".into()
}

/// `storage.cache`: `blobdescriptor: inmemory | redis` (empty: no cache).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub blobdescriptor: String,
    /// distribution's old name for `blobdescriptor`, still read by it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub layerinfo: String,
    /// distribution's inmemory size bound; not acted on (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobdescriptorsize: Tolerated,
    /// Berth's own: the manifest cache, see [`ManifestCacheConfig`].
    pub manifests: ManifestCacheConfig,
}

/// `storage.cache.manifests` (Berth's own; distribution ignores unknown keys
/// of `storage.cache`): manifests are immutable by digest, so their bytes
/// are kept in process (`size` bytes, least recently used out first) and,
/// with a `redis:` section, in Redis for `redisttl`; a tag's digest (and,
/// with neither Redis nor `blobdescriptor: inmemory`, a digest's repository
/// link) is trusted for `tagttl` (invalidated by pushes and deletes: on this
/// replica, and through Redis on all of them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestCacheConfig {
    /// Bytes of manifests (and tag entries) one replica keeps; 0: none.
    #[serde(deserialize_with = "super::s3::number")]
    pub size: u64,
    /// How long a tag's digest (without Redis: a repository link too) is
    /// served without reading its link.
    pub tagttl: String,
    /// How long a manifest's bytes stay in Redis (`redis:` set); 0: not kept.
    pub redisttl: String,
}

/// 64 MiB: some 16 000 manifests of a typical 4 KiB.
pub const DEFAULT_MANIFEST_CACHE_SIZE: u64 = 64 << 20;

impl Default for ManifestCacheConfig {
    fn default() -> Self {
        ManifestCacheConfig {
            size: DEFAULT_MANIFEST_CACHE_SIZE,
            tagttl: "5s".into(),
            redisttl: "24h".into(),
        }
    }
}

impl ManifestCacheConfig {
    /// (size, tag TTL, Redis TTL), validated; errors name the key.
    pub fn settings(&self) -> Result<(u64, std::time::Duration, std::time::Duration), String> {
        let parse = |key: &str, v: &str| {
            humantime::parse_duration(v.trim())
                .map_err(|e| format!("storage.cache.manifests.{key}: {v:?}: {e}"))
        };
        Ok((
            self.size,
            parse("tagttl", &self.tagttl)?,
            parse("redisttl", &self.redisttl)?,
        ))
    }
}

impl CacheConfig {
    /// `layerinfo` stands for `blobdescriptor` when that is not given, as in
    /// distribution.
    pub(super) fn resolve_aliases(&mut self) {
        if self.blobdescriptor.is_empty() {
            self.blobdescriptor = std::mem::take(&mut self.layerinfo);
        }
    }
}

/// `storage.maintenance`: `readonly` and `uploadpurging`, distribution's keys.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceConfig {
    pub readonly: ReadOnlyConfig,
    pub uploadpurging: UploadPurgingConfig,
}

/// Remove uploads abandoned for longer than `age`, every `interval`. On by
/// default with distribution's defaults (a week, daily).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadPurgingConfig {
    pub enabled: bool,
    pub age: String,
    pub interval: String,
    pub dryrun: bool,
}

impl Default for UploadPurgingConfig {
    fn default() -> Self {
        UploadPurgingConfig {
            enabled: true,
            age: "168h".into(),
            interval: "24h".into(),
            dryrun: false,
        }
    }
}

impl UploadPurgingConfig {
    /// (age, interval), validated.
    pub fn durations(&self) -> Result<(std::time::Duration, std::time::Duration), String> {
        let parse = |key: &str, v: &str| {
            humantime::parse_duration(v)
                .map_err(|e| format!("storage.maintenance.uploadpurging.{key}: {v:?}: {e}"))
        };
        let interval = parse("interval", &self.interval)?;
        if interval.is_zero() {
            return Err("storage.maintenance.uploadpurging.interval: must be positive".into());
        }
        Ok((parse("age", &self.age)?, interval))
    }
}

/// Every write refused, reads unaffected (distribution's key; settable from
/// `REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED` too).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ReadOnlyConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RedirectConfig {
    pub disable: bool,
}

/// The driver a configuration selects.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageDriverConfig {
    Filesystem { root: String },
    InMemory,
    S3(Box<S3Config>),
    Azure(Box<AzureSettings>),
}

impl StorageDriverConfig {
    /// The driver and where it keeps data, for the startup log line: no
    /// credentials, whatever the driver.
    pub fn describe(&self) -> String {
        match self {
            StorageDriverConfig::Filesystem { root } => format!("filesystem {root}"),
            StorageDriverConfig::InMemory => "inmemory".into(),
            StorageDriverConfig::S3(s3) => format!(
                "s3 bucket={} region={} rootdirectory={}",
                s3.bucket, s3.region, s3.rootdirectory
            ),
            StorageDriverConfig::Azure(az) => {
                format!("azure {}/{} root={}", az.service_url, az.container, az.root)
            }
        }
    }
}

impl StorageConfig {
    /// The shared budget `storage.uploadbuffers` describes.
    pub fn upload_buffer_budget(&self) -> Result<crate::storage::budget::BufferBudget, String> {
        let (bytes, wait) = self.uploadbuffers.settings()?;
        Ok(crate::storage::budget::BufferBudget::new(bytes, wait))
    }

    /// The one configured driver; with none at all, the embedded default is the
    /// filesystem under `./data`.
    pub fn driver(&self) -> Result<StorageDriverConfig, String> {
        let configured: Vec<&str> = [
            ("filesystem", self.filesystem.is_some()),
            ("inmemory", self.inmemory.is_some()),
            ("s3", self.s3.is_some()),
            ("azure", self.azure.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if configured.len() > 1 {
            return Err(format!(
                "storage: more than one driver configured ({})",
                configured.join(", ")
            ));
        }
        self.uploadbuffers.settings()?;
        if let Some(azure) = &self.azure {
            return Ok(StorageDriverConfig::Azure(Box::new(azure.settings()?)));
        }
        if let Some(s3) = &self.s3 {
            s3.validate()?;
            return Ok(StorageDriverConfig::S3(Box::new(s3.clone())));
        }
        match (&self.filesystem, &self.inmemory) {
            (Some(_), Some(_)) => {
                Err("storage: more than one driver configured (filesystem, inmemory)".into())
            }
            (Some(fs), None) => Ok(StorageDriverConfig::Filesystem {
                root: fs.rootdirectory.clone(),
            }),
            (None, Some(_)) => Ok(StorageDriverConfig::InMemory),
            (None, None) => Ok(StorageDriverConfig::Filesystem {
                root: "./data".into(),
            }),
        }
    }
}
