//! Building the S3 client from Berth's configuration alone (no shared AWS
//! config files consulted for region or endpoint), counting every HTTP request
//! it sends, retrying what the store failed transiently, and mapping SDK
//! errors to [`StorageError`].
//!
//! Retries: the SDK's standard mode (exponential backoff with full jitter,
//! 1 s base, 20 s cap, its retry-quota token bucket), `storage.s3.maxretries`
//! times. It retries 500/502/503/504, throttling codes (SlowDown), timeouts
//! and broken connections, and only requests whose body it can replay (Berth
//! sends `Bytes` bodies, never one-shot streams). Every S3 request Berth makes
//! is idempotent except CreateMultipartUpload (a second one leaves an
//! orphaned upload) and CompleteMultipartUpload (a second one after an
//! unseen success finds NoSuchUpload): those two take [`once_unless_refused`].
//! A GetObject body that breaks off mid-way is resumed by [`resuming`].
//!
//! The HTTP client is built here rather than taken from the SDK's
//! `default-https-client` feature, which would compile a second TLS crypto
//! library (aws-lc) next to ring: the same hyper 1 + rustls client, with
//! ring as its provider and the system's trust store.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use aws_config::{
    default_provider::credentials::DefaultCredentialsChain, provider_config::ProviderConfig,
};
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_sdk_s3::{
    config::{
        interceptors::{BeforeDeserializationInterceptorContextRef, InterceptorContext},
        retry::{ClassifyRetry, RetryAction, RetryConfig},
        BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation,
        ResponseChecksumValidation, RuntimeComponents, SharedCredentialsProvider, SharedHttpClient,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    operation::get_object::GetObjectOutput,
    Client,
};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};

use crate::{config::S3Config, storage::StorageError};

/// Counts requests answered by the store (retries included; presigning,
/// which stops before transmitting, is not counted).
#[derive(Debug)]
struct Counter(Arc<AtomicU64>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "berth-request-counter"
    }

    fn read_after_transmit(
        &self,
        _ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The HTTPS client of the S3 clients and of the credential chain's STS,
/// ECS and instance-metadata calls: rustls on ring.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The default AWS chain (environment, profile, web identity / IRSA, ECS,
/// instance metadata), built on first use: its construction is async and
/// `build_driver` is not, and a registry given static keys never builds it.
#[derive(Debug)]
struct DefaultChain {
    region: Region,
    http: SharedHttpClient,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    DefaultCredentialsChain::builder()
                        .configure(
                            ProviderConfig::without_region().with_http_client(self.http.clone()),
                        )
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

/// One client per endpoint: the API endpoint, and (when set) the public
/// `redirectendpoint` used only to presign.
pub(super) fn build(cfg: &S3Config, endpoint: Option<&str>, counter: &Arc<AtomicU64>) -> Client {
    let region = Region::new(cfg.region.clone());
    let http = http_client();
    let credentials = if cfg.accesskey.is_empty() {
        SharedCredentialsProvider::new(DefaultChain {
            region: region.clone(),
            http: http.clone(),
            chain: tokio::sync::OnceCell::new(),
        })
    } else {
        SharedCredentialsProvider::new(Credentials::new(
            cfg.accesskey.clone(),
            cfg.secretkey.clone(),
            (!cfg.sessiontoken.is_empty()).then(|| cfg.sessiontoken.clone()),
            None,
            "berth-config",
        ))
    };
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .region(region)
        .credentials_provider(credentials)
        .force_path_style(cfg.forcepathstyle)
        // S3-compatible stores vary in their support of the newer default
        // (CRC checksums on every upload); checksum only where S3 requires it.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(attempts(cfg)))
        .interceptor(Counter(counter.clone()));
    if let Some(e) = endpoint {
        b = b.endpoint_url(cfg.endpoint_url(e));
    } else if !cfg.secure {
        b = b.endpoint_url(format!("http://s3.{}.amazonaws.com", cfg.region));
    }
    Client::from_conf(b.build())
}

/// Attempts per request: the first and `maxretries` more.
fn attempts(cfg: &S3Config) -> u32 {
    u32::try_from(cfg.maxretries)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// Vetoes the retry of a request that is not idempotent unless the store
/// refused it outright (503, throttled): after a 500, a timeout or a broken
/// connection the store may have acted on it, and the caller gets
/// `Unavailable` (503 to the client, who retries the whole operation).
#[derive(Debug)]
struct OnceUnlessRefused;

impl ClassifyRetry for OnceUnlessRefused {
    /// Independent of the other classifiers' verdicts (which may run before
    /// or after it): a forbidden retry ends the classification.
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        if !matches!(ctx.output_or_error(), Some(Err(_))) {
            return RetryAction::NoActionIndicated;
        }
        let refused = ctx
            .response()
            .is_some_and(|r| matches!(r.status().as_u16(), 429 | 503));
        if refused {
            RetryAction::NoActionIndicated
        } else {
            RetryAction::RetryForbidden
        }
    }

    fn name(&self) -> &'static str {
        "berth-once-unless-refused"
    }
}

/// The per-request override for CreateMultipartUpload and
/// CompleteMultipartUpload (`.customize().config_override(..)`).
pub(super) fn once_unless_refused() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_classifier(OnceUnlessRefused)
}

/// A GetObject's body that survives the connection breaking mid-way (a
/// reset, a proxy timing out): the rest is fetched again from where it broke,
/// `If-Match` the first answer's ETag so that no byte of another version is
/// ever spliced in, up to `maxretries` times in a row without progress.
/// `start` is the offset of the first byte `resp` carries. A body that still
/// breaks ends in an I/O error of a transient kind (the caller answers 503,
/// or, mid-response, the client sees a short body and retries).
pub(super) fn resuming(
    client: Client,
    bucket: String,
    key: String,
    start: u64,
    resp: GetObjectOutput,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    struct State {
        client: Client,
        bucket: String,
        key: String,
        etag: Option<String>,
        /// Offset of the next byte, and one past the last one wanted (None
        /// when the store sent no length: then a break is never the end).
        pos: u64,
        end: Option<u64>,
        body: aws_sdk_s3::primitives::ByteStream,
        tries: u32,
    }
    let end = resp
        .content_length()
        .and_then(|l| u64::try_from(l).ok())
        .map(|l| start + l);
    let tries = client
        .config()
        .retry_config()
        .map_or(1, |r| r.max_attempts().saturating_sub(1));
    let state = State {
        client,
        bucket,
        key,
        etag: resp.e_tag().map(str::to_string),
        pos: start,
        end,
        body: resp.body,
        tries,
    };
    futures::stream::unfold(state, |mut st| async move {
        let mut failures = 0;
        loop {
            match st.body.next().await {
                Some(Ok(chunk)) => {
                    st.pos += chunk.len() as u64;
                    return Some((Ok(chunk), st));
                }
                None => return None,
                Some(Err(e)) if st.end.is_some_and(|end| st.pos >= end) => {
                    // Everything wanted came; only the tail of the exchange broke.
                    tracing::debug!(key = %st.key, "s3 body error after its last byte: {e}");
                    return None;
                }
                Some(Err(e)) => {
                    failures += 1;
                    let broke = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!("s3 GetObject {}: body broke at {}: {e}", st.key, st.pos),
                    );
                    if failures > st.tries {
                        return Some((Err(broke), st));
                    }
                    tracing::warn!("{broke}; resuming");
                    let again = st
                        .client
                        .get_object()
                        .bucket(&st.bucket)
                        .key(&st.key)
                        .range(match st.end {
                            Some(end) => format!("bytes={}-{}", st.pos, end - 1),
                            None => format!("bytes={}-", st.pos),
                        })
                        .set_if_match(st.etag.clone())
                        .send()
                        .await;
                    match again {
                        Ok(r) => st.body = r.body,
                        Err(e) => {
                            let e = std::io::Error::new(
                                std::io::ErrorKind::ConnectionAborted,
                                format!(
                                    "s3 GetObject {} resuming at {}: {}",
                                    st.key,
                                    st.pos,
                                    DisplayErrorContext(&e)
                                ),
                            );
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        }
    })
    .boxed()
}

/// A whole (small) body in memory; a body that broke for good is a
/// transient I/O error.
pub(super) async fn collect(
    mut body: BoxStream<'static, std::io::Result<Bytes>>,
) -> Result<Bytes, StorageError> {
    let mut all = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all.freeze())
}

/// The HTTP status of a failed request, when one came back.
pub(super) fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Whether the error says the object (not the bucket) is missing.
pub(super) fn is_missing<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match e.as_service_error().and_then(|s| s.code()) {
        Some("NoSuchKey") | Some("NotFound") => true,
        Some(_) => false,
        None => status(e) == Some(404),
    }
}

/// Map an SDK error: a missing object is `NotFound(path)`; one a retry may
/// well cure (no answer in time, no connection, throttling, a 5xx) is
/// `Unavailable`; anything else a backend error. Both name the operation and
/// the key.
pub(super) fn map_err<E>(
    op: &str,
    path: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_missing(&e) {
        return StorageError::NotFound(path.to_string());
    }
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // No answer at all; a "user" failure is our own request, not the store.
        SdkError::DispatchFailure(d) => !d.is_user(),
        _ => {
            matches!(status(&e), Some(408 | 429 | 500 | 502 | 503 | 504))
                || matches!(
                    e.as_service_error().and_then(|s| s.code()),
                    Some("SlowDown" | "RequestTimeout" | "ServiceUnavailable" | "Throttling")
                )
        }
    };
    let text = format!("s3 {op} {path}: {}", DisplayErrorContext(&e));
    if transient {
        StorageError::Unavailable(text)
    } else {
        StorageError::Backend(text)
    }
}
