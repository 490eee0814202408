//! `storage.s3`: distribution's S3 driver parameters, plus Berth's
//! `redirectendpoint` (the public endpoint presigned URLs name, when the
//! registry reaches the store through a private `regionendpoint`).

use serde::{Deserialize, Deserializer, Serialize};

use super::compat::Tolerated;

/// S3's smallest multipart part (all parts but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's largest single-request object (PutObject, CopyObject) and part.
pub const MAX_SINGLE: u64 = 5 * 1024 * 1024 * 1024;
/// The largest `chunksize` Berth takes: 10,000 parts of it already make
/// S3's largest object (5 TiB), so a larger part buys nothing but memory per
/// upload (distribution takes up to 5 GiB).
pub const MAX_CHUNK: u64 = 512 * 1024 * 1024;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub bucket: String,
    /// Endpoint of an S3-compatible service (`https://minio:9000`); a bare
    /// host takes `https://` or, with `secure: false`, `http://`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub regionendpoint: String,
    /// Public endpoint for presigned redirect URLs (Berth's addition).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redirectendpoint: String,
    #[serde(default, deserialize_with = "flag")]
    pub forcepathstyle: bool,
    /// Static credentials; without them, the default AWS chain (environment,
    /// profile, web identity / IRSA, container, instance profile).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accesskey: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secretkey: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sessiontoken: String,
    #[serde(default, deserialize_with = "flag")]
    pub encrypt: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    #[serde(default = "yes", deserialize_with = "flag")]
    pub secure: bool,
    #[serde(default, deserialize_with = "flag")]
    pub skipverify: bool,
    /// Accepted for distribution configs; Berth always signs with SigV4.
    #[serde(default = "yes", deserialize_with = "flag")]
    pub v4auth: bool,
    #[serde(default = "default_chunk", deserialize_with = "number")]
    pub chunksize: u64,
    #[serde(default = "default_copy_chunk", deserialize_with = "number")]
    pub multipartcopychunksize: u64,
    #[serde(default = "default_copy_concurrency", deserialize_with = "number")]
    pub multipartcopymaxconcurrency: u64,
    #[serde(default = "default_copy_chunk", deserialize_with = "number")]
    pub multipartcopythresholdsize: u64,
    /// Berth's: reads of a blob this large or larger are fetched as ranged
    /// GetObjects of `readaheadchunksize`, up to `readaheadmaxconcurrency`
    /// of them ahead of the one being sent (0: one GetObject per read).
    #[serde(default = "default_read_ahead_threshold", deserialize_with = "number")]
    pub readaheadthresholdsize: u64,
    #[serde(default = "default_read_ahead_chunk", deserialize_with = "number")]
    pub readaheadchunksize: u64,
    #[serde(default = "default_read_ahead", deserialize_with = "number")]
    pub readaheadmaxconcurrency: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootdirectory: String,
    #[serde(default = "default_storage_class")]
    pub storageclass: String,
    #[serde(default = "default_acl")]
    pub objectacl: String,
    /// Berth's: retries of a request the store failed transiently (503
    /// SlowDown, 500, a broken connection, a timeout), with jittered
    /// exponential backoff; distribution has no such key.
    #[serde(default = "default_max_retries", deserialize_with = "number")]
    pub maxretries: u64,
    // distribution's, not acted on (see `compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglevel: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub useragent: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usedualstack: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerate: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksumdisabled: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksumalgorithm: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectownership: Tolerated,
}

fn yes() -> bool {
    true
}
fn default_chunk() -> u64 {
    2 * MIN_PART
}
fn default_copy_chunk() -> u64 {
    32 * 1024 * 1024
}
fn default_copy_concurrency() -> u64 {
    100
}
fn default_read_ahead_threshold() -> u64 {
    READ_AHEAD_THRESHOLD
}
fn default_read_ahead_chunk() -> u64 {
    READ_AHEAD_CHUNK
}
fn default_read_ahead() -> u64 {
    READ_AHEAD
}
fn default_storage_class() -> String {
    "STANDARD".into()
}
fn default_acl() -> String {
    "private".into()
}
/// `readaheadthresholdsize`: reads this large or larger are split (see
/// storage/s3/readahead.rs). Below it a read is one GetObject, so a docker
/// pull of ordinary layers costs one request per layer.
pub const READ_AHEAD_THRESHOLD: u64 = 64 << 20;
/// `readaheadchunksize`: the size of each ranged GetObject (the upper end of
/// AWS's 8-16 MiB advice, so few requests).
pub const READ_AHEAD_CHUNK: u64 = 16 << 20;
/// `readaheadmaxconcurrency`: chunks fetched ahead of the one being sent.
/// Three gave a pull from Garage 0.87-0.92x GetObject's speed where one
/// GetObject gave 0.74-0.77x (see storage/s3/readahead.rs); each holds a
/// chunk of budget, only while it is free.
pub const READ_AHEAD: u64 = 3;
/// The most chunks a read may have ahead.
pub const MAX_READ_AHEAD: u64 = 64;
/// The read-ahead keys of `section` (`storage.s3`, `storage.azure`) in
/// range.
pub(super) fn check_read_ahead(section: &str, chunk: u64, ahead: u64) -> Result<(), String> {
    if !(1 << 20..=MAX_CHUNK).contains(&chunk) {
        return Err(format!(
            "{section}.readaheadchunksize: {chunk} is outside 1048576 (1 MiB) ..= {MAX_CHUNK} (512 MiB)"
        ));
    }
    if ahead > MAX_READ_AHEAD {
        return Err(format!(
            "{section}.readaheadmaxconcurrency: {ahead} is above {MAX_READ_AHEAD}"
        ));
    }
    Ok(())
}

/// Five attempts: at a 10 % failure rate one request in 100,000 still fails.
pub const DEFAULT_MAX_RETRIES: u64 = 4;
/// Beyond this the backoff (capped at 20 s a wait) outlasts any client's patience.
pub const MAX_RETRIES: u64 = 20;
fn default_max_retries() -> u64 {
    DEFAULT_MAX_RETRIES
}

/// A number, also when written as a string (`"10485760"`), as distribution takes it.
pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
    }
}

/// A boolean, also when written as a string (`"true"`).
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not true or false"))),
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            region: String::new(),
            bucket: String::new(),
            regionendpoint: String::new(),
            redirectendpoint: String::new(),
            forcepathstyle: false,
            accesskey: String::new(),
            secretkey: String::new(),
            sessiontoken: String::new(),
            encrypt: false,
            keyid: String::new(),
            secure: true,
            skipverify: false,
            v4auth: true,
            chunksize: default_chunk(),
            multipartcopychunksize: default_copy_chunk(),
            multipartcopymaxconcurrency: default_copy_concurrency(),
            multipartcopythresholdsize: default_copy_chunk(),
            readaheadthresholdsize: default_read_ahead_threshold(),
            readaheadchunksize: default_read_ahead_chunk(),
            readaheadmaxconcurrency: default_read_ahead(),
            rootdirectory: String::new(),
            storageclass: default_storage_class(),
            objectacl: default_acl(),
            maxretries: default_max_retries(),
            loglevel: None,
            useragent: None,
            usedualstack: None,
            accelerate: None,
            checksumdisabled: None,
            checksumalgorithm: None,
            objectownership: None,
        }
    }
}

/// Secrets stay out of logs (the server logs its driver configuration).
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Config")
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("regionendpoint", &self.regionendpoint)
            .field("redirectendpoint", &self.redirectendpoint)
            .field("forcepathstyle", &self.forcepathstyle)
            .field("accesskey", &self.accesskey)
            .field("secretkey", &redact(&self.secretkey))
            .field("sessiontoken", &redact(&self.sessiontoken))
            .field("encrypt", &self.encrypt)
            .field("secure", &self.secure)
            .field("chunksize", &self.chunksize)
            .field("rootdirectory", &self.rootdirectory)
            .field("storageclass", &self.storageclass)
            .field("maxretries", &self.maxretries)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// One line naming the first bad key.
    pub fn validate(&self) -> Result<(), String> {
        let key = |k: &str| format!("storage.s3.{k}");
        if self.region.trim().is_empty() {
            return Err(format!("{}: required (e.g. us-east-1)", key("region")));
        }
        if self.bucket.trim().is_empty() {
            return Err(format!("{}: required", key("bucket")));
        }
        if self.accesskey.is_empty() != self.secretkey.is_empty() {
            return Err(format!(
                "{}: accesskey and secretkey must be given together",
                key(if self.accesskey.is_empty() {
                    "accesskey"
                } else {
                    "secretkey"
                })
            ));
        }
        if !self.v4auth {
            return Err(format!(
                "{}: false is not supported (SigV4 only)",
                key("v4auth")
            ));
        }
        if self.skipverify {
            return Err(format!(
                "{}: not supported; add the endpoint's CA to the system trust store",
                key("skipverify")
            ));
        }
        if self.chunksize < MIN_PART || self.chunksize > MAX_CHUNK {
            return Err(format!(
                "{}: {} is outside {MIN_PART} (5 MiB) ..= {MAX_CHUNK} (512 MiB; 10,000 parts \
                 of 512 MiB already make S3's largest object)",
                key("chunksize"),
                self.chunksize
            ));
        }
        if self.multipartcopychunksize < MIN_PART || self.multipartcopychunksize > MAX_SINGLE {
            return Err(format!(
                "{}: {} is outside {MIN_PART} (5 MiB) ..= {MAX_SINGLE} (5 GiB)",
                key("multipartcopychunksize"),
                self.multipartcopychunksize
            ));
        }
        if self.multipartcopymaxconcurrency == 0 {
            return Err(format!(
                "{}: must be at least 1",
                key("multipartcopymaxconcurrency")
            ));
        }
        if self.multipartcopythresholdsize > MAX_SINGLE {
            return Err(format!(
                "{}: {} is above {MAX_SINGLE} (5 GiB, S3's single-copy limit)",
                key("multipartcopythresholdsize"),
                self.multipartcopythresholdsize
            ));
        }
        check_read_ahead(
            "storage.s3",
            self.readaheadchunksize,
            self.readaheadmaxconcurrency,
        )?;
        if self.maxretries > MAX_RETRIES {
            return Err(format!(
                "{}: {} is above {MAX_RETRIES}",
                key("maxretries"),
                self.maxretries
            ));
        }
        if !self.keyid.is_empty() && !self.encrypt {
            return Err(format!("{}: needs encrypt: true", key("keyid")));
        }
        for (k, v) in [
            ("regionendpoint", &self.regionendpoint),
            ("redirectendpoint", &self.redirectendpoint),
        ] {
            if !v.is_empty() {
                let full = self.endpoint_url(v);
                url::Url::parse(&full).map_err(|e| format!("{}: {v:?}: {e}", key(k)))?;
            }
        }
        if self
            .rootdirectory
            .split('/')
            .any(|seg| seg == "." || seg == "..")
        {
            return Err(format!(
                "{}: must not contain . or .. segments",
                key("rootdirectory")
            ));
        }
        Ok(())
    }

    /// An endpoint as a URL: given as is when it has a scheme, else with
    /// `https://` (or `http://` when `secure: false`).
    pub fn endpoint_url(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.trim_end_matches('/').to_string()
        } else {
            let scheme = if self.secure { "https" } else { "http" };
            format!("{scheme}://{}", endpoint.trim_end_matches('/'))
        }
    }

    /// The key prefix objects live under: `rootdirectory` without its leading
    /// or trailing slash, as distribution's driver computes it.
    pub fn root_prefix(&self) -> String {
        self.rootdirectory.trim_matches('/').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<S3Config, String> {
        use figment::providers::{Format, Yaml};
        let c: S3Config = figment::Figment::from(Yaml::string(yaml))
            .extract()
            .map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_match_distribution() {
        let c = parse("region: us-east-1\nbucket: b\n").unwrap();
        assert_eq!(c.chunksize, 10 * 1024 * 1024);
        assert_eq!(c.multipartcopythresholdsize, 32 * 1024 * 1024);
        assert_eq!(c.multipartcopymaxconcurrency, 100);
        assert!(c.secure && !c.forcepathstyle && !c.encrypt);
        assert_eq!(c.storageclass, "STANDARD");
        assert_eq!(c.maxretries, DEFAULT_MAX_RETRIES);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("bucket: b\n").unwrap_err();
        assert!(e.starts_with("storage.s3.region:"), "{e}");
        let e = parse("region: r\nbucket: b\nchunksize: 1024\n").unwrap_err();
        assert!(e.starts_with("storage.s3.chunksize:"), "{e}");
        let e = parse("region: r\nbucket: b\nchunksize: 5368709120\n").unwrap_err();
        assert!(e.starts_with("storage.s3.chunksize:"), "{e}");
        parse("region: r\nbucket: b\nchunksize: 536870912\n").unwrap();
        let e = parse("region: r\nbucket: b\naccesskey: a\n").unwrap_err();
        assert!(e.starts_with("storage.s3.secretkey:"), "{e}");
        let e = parse("region: r\nbucket: b\nmaxretries: 21\n").unwrap_err();
        assert!(e.starts_with("storage.s3.maxretries:"), "{e}");
        let e = parse("region: r\nbucket: b\nbogus: 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn strings_for_numbers_and_flags() {
        let c = parse("region: r\nbucket: b\nchunksize: '6291456'\nsecure: 'false'\n").unwrap();
        assert_eq!(c.chunksize, 6291456);
        assert_eq!(c.endpoint_url("minio:9000"), "http://minio:9000");
        assert_eq!(c.endpoint_url("https://s3.example/"), "https://s3.example");
    }

    #[test]
    fn secrets_are_not_logged() {
        let c = S3Config {
            secretkey: "hunter2".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
