//! The store alone: the registry workloads' S3 equivalents sent straight to
//! the S3 server (PutObject of the large blob, GetObject of it, PutObject of
//! small objects, HeadObject and GetObject of a 4 KiB object at the same
//! concurrency), signed with SigV4 (`UNSIGNED-PAYLOAD`). A ceiling for what a
//! registry in front of that store can do.

use std::{
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use bytes::Bytes;
use http::{header::HeaderName, Method, StatusCode};
use indicatif::ProgressBar;
use sha2::{Digest as _, Sha256};

use crate::{
    data::{hex, BlobData},
    http::{drain, expect, Client, ReqBody},
    workloads::{self, LoadResult, LoadSpec, PushTiming, SmallResult},
};

const REGION: &str = "us-east-1";
const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) in UTC.
fn amz_date(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let day = format!("{y:04}{m:02}{d:02}");
    let full = format!(
        "{day}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    (day, full)
}

/// SigV4 headers (`x-amz-date`, `x-amz-content-sha256`, `authorization`) for
/// a request without a query string; `path` is `/bucket/key`, already plain
/// (keys here are `[a-z0-9/.-]`).
pub fn sign(
    access: &str,
    secret: &str,
    method: &Method,
    host: &str,
    path: &str,
    now: SystemTime,
) -> Vec<(HeaderName, String)> {
    let (day, stamp) = amz_date(now);
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{UNSIGNED}\nx-amz-date:{stamp}\n\n{signed}\n{UNSIGNED}"
    );
    let scope = format!("{day}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let sig = hex(&hmac(&key, to_sign.as_bytes()));
    vec![
        (HeaderName::from_static("x-amz-date"), stamp),
        (
            HeaderName::from_static("x-amz-content-sha256"),
            UNSIGNED.to_string(),
        ),
        (
            http::header::AUTHORIZATION,
            format!("AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, Signature={sig}"),
        ),
    ]
}

/// A store endpoint and its keys.
#[derive(Clone)]
pub struct Store {
    pub addr: SocketAddr,
    pub bucket: String,
    pub access: String,
    pub secret: String,
}

impl Store {
    fn path(&self, key: &str) -> String {
        format!("/{}/{key}", self.bucket)
    }

    fn headers(&self, method: &Method, key: &str) -> Vec<(HeaderName, String)> {
        sign(
            &self.access,
            &self.secret,
            method,
            &self.addr.to_string(),
            &self.path(key),
            SystemTime::now(),
        )
    }

    async fn send(
        &self,
        c: &mut Client,
        method: Method,
        key: &str,
        body: ReqBody,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let h = self.headers(&method, key);
        let hr: Vec<(HeaderName, &str)> = h.iter().map(|(k, v)| (k.clone(), v.as_str())).collect();
        c.send(method, &self.path(key), &hr, body).await
    }

    /// PutObject of a generated blob, streamed.
    pub async fn put_big(
        &self,
        key: &str,
        blob: &BlobData,
        pb: &ProgressBar,
    ) -> Result<PushTiming> {
        let mut c = Client::new(self.addr);
        let t0 = Instant::now();
        let body = ReqBody::blob_range(blob, 0, blob.size(), Some(pb.clone()));
        let resp = self.send(&mut c, Method::PUT, key, body).await?;
        drain(expect(resp, StatusCode::OK, "PutObject").await?, None).await?;
        Ok(PushTiming {
            total: t0.elapsed(),
            tail: Duration::ZERO,
        })
    }

    /// GetObject, streamed and discarded.
    pub async fn get_big(&self, key: &str, size: u64, pb: &ProgressBar) -> Result<Duration> {
        let mut c = Client::new(self.addr);
        let t0 = Instant::now();
        let resp = self.send(&mut c, Method::GET, key, ReqBody::Empty).await?;
        let n = drain(expect(resp, StatusCode::OK, "GetObject").await?, Some(pb)).await?;
        anyhow::ensure!(n == size, "GetObject {key}: {n} bytes, expected {size}");
        Ok(t0.elapsed())
    }

    /// PutObject of each small blob, `concurrency` at a time.
    pub async fn put_small(
        &self,
        prefix: &str,
        blobs: Rc<Vec<(Bytes, String)>>,
        concurrency: usize,
        pb: &ProgressBar,
    ) -> Result<SmallResult> {
        let store = self.clone();
        let prefix = prefix.to_string();
        let put = async move |c: &mut Client, data: &Bytes, digest: &str| {
            let key = format!("{prefix}/{}", digest.trim_start_matches("sha256:"));
            let resp = store
                .send(c, Method::PUT, &key, ReqBody::full(data.clone()))
                .await?;
            drain(expect(resp, StatusCode::OK, "PutObject").await?, None).await?;
            Ok(())
        };
        workloads::send_small_blobs(self.addr, blobs, concurrency, pb, put).await
    }

    /// PutObject of a small object (for the request loops).
    pub async fn put_one(&self, key: &str, data: Bytes) -> Result<()> {
        let mut c = Client::new(self.addr);
        let resp = self
            .send(&mut c, Method::PUT, key, ReqBody::full(data))
            .await?;
        drain(expect(resp, StatusCode::OK, "PutObject").await?, None).await?;
        Ok(())
    }

    /// A request loop on one key; the signature (valid for 15 minutes) is
    /// the same for every request.
    pub async fn load(
        &self,
        method: Method,
        key: &str,
        connections: usize,
        warmup: Duration,
        duration: Duration,
        pb: &ProgressBar,
    ) -> Result<LoadResult> {
        let mut spec = LoadSpec::new(
            method.clone(),
            self.path(key),
            connections,
            warmup,
            duration,
        );
        for (k, v) in self.headers(&method, key) {
            spec = spec.header(k, v);
        }
        workloads::load(self.addr, &spec, pb).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_case2() {
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        assert_eq!(
            amz_date(t),
            ("20150830".to_string(), "20150830T123600Z".to_string())
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(amz_date(leap).0, "20000229");
    }
}
