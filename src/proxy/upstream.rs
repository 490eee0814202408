//! The upstream registry, as a client of its Distribution API: manifest
//! HEAD/GET and blob GET, logged in as [`super::auth`] describes, with
//! its failures turned into the errors a Berth client should see.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Method, StatusCode, Url};

use super::auth::{may_send_account, parse_challenge, parse_token, Challenge, Tokens};
use super::metrics::ProxyMetrics;
use crate::outbound::read_capped;
use crate::registry::manifest::MAX_MANIFEST_SIZE;
use crate::{
    digest::Digest,
    registry::error::{Code, Error, Result},
    storage::ByteStream,
};

/// What a mirror asks for: every manifest type a client may want, so that
/// the cached copy serves them all (the client's own Accept is applied to
/// the cached bytes, as for a pushed manifest).
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A client told to slow down, or an upstream that is down, is told to
/// come back after this unless the upstream said otherwise.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct Upstream {
    base: Url,
    /// The upstream's URL as the metrics name it.
    label: String,
    metrics: ProxyMetrics,
    client: reqwest::Client,
    account: Option<(String, String)>,
    tokens: Tokens,
}

/// A manifest as the upstream sent it.
pub struct RemoteManifest {
    pub body: Bytes,
    pub content_type: Option<String>,
}

impl Upstream {
    pub fn new(
        remote: &str,
        account: Option<(String, String)>,
        timeout: Duration,
        metrics: ProxyMetrics,
    ) -> Result<Upstream> {
        let base = Url::parse(remote)
            .map_err(|e| Error::new(Code::Unknown, format!("proxy remoteurl {remote:?}: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| Error::new(Code::Unknown, format!("upstream client: {e}")))?;
        Ok(Upstream {
            label: remote.to_string(),
            metrics,
            base,
            client,
            account,
            tokens: Tokens::default(),
        })
    }

    /// The upstream's URL, for logs and metrics.
    pub fn url(&self) -> &str {
        &self.label
    }

    /// Count an exchange with the upstream.
    fn counted(&self, r: reqwest::Result<reqwest::Response>) -> reqwest::Result<reqwest::Response> {
        let status = r.as_ref().ok().map(|r| r.status().as_u16());
        self.metrics.upstream_request(&self.label, status);
        r
    }

    /// The digest the upstream has for `reference` (a HEAD: free of Docker
    /// Hub's pull limit), when it says.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<Digest>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::HEAD, &path, repo).await?;
        let resp = check(resp, Code::ManifestUnknown, &path).await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<RemoteManifest> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::GET, &path, repo).await?;
        let resp = check(resp, Code::ManifestUnknown, &path).await?;
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = capped(resp, MAX_MANIFEST_SIZE, &path).await?;
        self.metrics.upstream_bytes(&self.label, body.len() as u64);
        Ok(RemoteManifest { body, content_type })
    }

    /// A page of the upstream's tags of `repo` (`n` at most, after `last`),
    /// and whether it said more follow (a `Link` header).
    pub async fn tags(
        &self,
        repo: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool)> {
        let mut path = format!("/v2/{repo}/tags/list?n={n}");
        if let Some(l) = last {
            path.push_str("&last=");
            path.extend(url::form_urlencoded::byte_serialize(l.as_bytes()));
        }
        let resp = self.send(Method::GET, &path, repo).await?;
        let resp = check(resp, Code::NameUnknown, &path).await?;
        let more = resp.headers().contains_key(header::LINK);
        let body = capped(resp, MAX_TAG_LIST, &path).await?;
        self.metrics.upstream_bytes(&self.label, body.len() as u64);
        let list: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                Code::Unavailable,
                format!("the upstream's tag list is not JSON: {e}"),
            )
            .with_retry_after(RETRY_AFTER)
        })?;
        let tags = list["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((tags, more))
    }

    /// A blob's body as it streams in (redirects to a CDN followed, without
    /// Berth's credentials), and its length when the upstream said it.
    pub async fn blob(&self, repo: &str, d: &Digest) -> Result<(ByteStream, Option<u64>)> {
        let path = format!("/v2/{repo}/blobs/{d}");
        let resp = self.send(Method::GET, &path, repo).await?;
        let resp = check(resp, Code::BlobUnknown, &path).await?;
        let len = resp.content_length();
        let body = futures::stream::unfold(Some(resp), move |resp| async move {
            let mut resp = resp?;
            match resp.chunk().await {
                Ok(Some(c)) => Some((Ok(c), Some(resp))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!("upstream blob body: {e}"),
                    )),
                    None,
                )),
            }
        });
        let (metrics, label) = (self.metrics.clone(), self.label.clone());
        let body = futures::TryStreamExt::inspect_ok(body, move |c| {
            metrics.upstream_bytes(&label, c.len() as u64)
        });
        Ok((Box::pin(body), len))
    }

    /// Send a request for `repo`'s content, logging in on a 401 and sending
    /// it once more.
    async fn send(&self, method: Method, path: &str, repo: &str) -> Result<reqwest::Response> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::new(Code::NameInvalid, format!("{path}: {e}")))?;
        let scope = format!("repository:{repo}:pull");
        let request = |auth: Option<String>| {
            let mut r = self
                .client
                .request(method.clone(), url.clone())
                .header(header::ACCEPT, ACCEPT);
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            r
        };
        let cached = self.tokens.get(&scope).map(|t| format!("Bearer {t}"));
        let had_token = cached.is_some();
        let resp = self
            .counted(request(cached).send().await)
            .map_err(|e| unavailable(path, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if had_token {
            self.tokens.forget(&scope);
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let auth = match challenge {
            Some(Challenge::Basic) => match &self.account {
                Some((u, p)) => basic(u, p),
                None => return Ok(resp),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let scope = asked.unwrap_or(scope);
                let token = self.token(&realm, service.as_deref(), &scope).await?;
                format!("Bearer {token}")
            }
            None => return Ok(resp),
        };
        self.counted(request(Some(auth)).send().await)
            .map_err(|e| unavailable(path, e))
    }

    /// A bearer token for `scope` from `realm`, remembered until it lapses.
    async fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        if let Some(t) = self.tokens.get(scope) {
            return Ok(t);
        }
        let mut url = Url::parse(realm).map_err(|e| {
            Error::new(
                Code::Unavailable,
                format!("the upstream's token realm {realm:?} is not a URL: {e}"),
            )
            .with_retry_after(RETRY_AFTER)
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.client.get(url.clone());
        if let Some((u, p)) = &self.account {
            if may_send_account(&self.base, &url) {
                req = req.header(header::AUTHORIZATION, basic(u, p));
            } else {
                tracing::warn!(
                    upstream = %self.base,
                    realm,
                    "proxy: not sending the upstream account to a token realm on another host"
                );
            }
        }
        let resp = self
            .counted(req.send().await)
            .map_err(|e| unavailable(realm, e))?;
        let resp = check(resp, Code::Unknown, realm).await?;
        let body = capped(resp, MAX_TOKEN_ANSWER, realm).await?;
        let (token, life) = parse_token(&body).map_err(|e| {
            Error::new(Code::Unavailable, format!("upstream token server: {e}"))
                .with_retry_after(RETRY_AFTER)
        })?;
        self.tokens.put(scope, token.clone(), life);
        Ok(token)
    }
}

/// The most an upstream's tag list page or token answer may weigh (a
/// manifest: [`MAX_MANIFEST_SIZE`], as for a push).
const MAX_TAG_LIST: usize = 16 << 20;
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// A body read whole, at most `max` bytes: an upstream sending more is
/// failing, and is cut off rather than buffered.
async fn capped(resp: reqwest::Response, max: usize, what: &str) -> Result<Bytes> {
    read_capped(resp, max).await.map_err(|e| {
        tracing::warn!("proxy: upstream {what}: {e} (at most {max} bytes)");
        Error::new(
            Code::Unavailable,
            format!("the upstream registry's answer for {what} is not usable"),
        )
        .with_retry_after(RETRY_AFTER)
    })
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// No answer from the upstream: worth a retry.
fn unavailable(what: &str, e: reqwest::Error) -> Error {
    tracing::warn!("proxy: upstream {what}: {e}");
    Error::new(
        Code::Unavailable,
        format!("the upstream registry did not answer for {what}"),
    )
    .with_retry_after(RETRY_AFTER)
}

/// A successful answer, or the error the client should see: the upstream's
/// 404 as `missing`, its 429 passed on with its `Retry-After`, a refusal of
/// Berth's own account as DENIED, anything else as UNAVAILABLE.
async fn check(resp: reqwest::Response, missing: Code, what: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    tracing::info!(status = status.as_u16(), "proxy: upstream refused {what}");
    Err(match status {
        StatusCode::NOT_FOUND => Error::new(missing, format!("not found upstream: {what}")),
        StatusCode::TOO_MANY_REQUESTS => Error::new(
            Code::TooManyRequests,
            "the upstream registry is rate-limiting this mirror",
        )
        .with_retry_after(retry_after.unwrap_or(RETRY_AFTER)),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::new(
            Code::Denied,
            format!(
                "the upstream registry refused the mirror's access to {what} ({})",
                status.as_u16()
            ),
        ),
        _ => Error::new(
            Code::Unavailable,
            format!(
                "the upstream registry answered {} for {what}",
                status.as_u16()
            ),
        )
        .with_retry_after(retry_after.unwrap_or(RETRY_AFTER)),
    })
}
