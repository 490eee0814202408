//! Building the S3 client from Berth's configuration alone (no shared AWS
//! config files consulted for region or endpoint), counting every HTTP request
//! it sends, and mapping SDK errors to [`StorageError`].
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
        interceptors::BeforeDeserializationInterceptorContextRef, BehaviorVersion, ConfigBag,
        Credentials, Intercept, Region, RequestChecksumCalculation, ResponseChecksumValidation,
        RuntimeComponents, SharedCredentialsProvider, SharedHttpClient,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    Client,
};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

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
        .interceptor(Counter(counter.clone()));
    if let Some(e) = endpoint {
        b = b.endpoint_url(cfg.endpoint_url(e));
    } else if !cfg.secure {
        b = b.endpoint_url(format!("http://s3.{}.amazonaws.com", cfg.region));
    }
    Client::from_conf(b.build())
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
