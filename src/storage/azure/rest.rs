//! The Blob service calls object_store does not expose — Put Block, Put Block
//! List with committed blocks, Get Block List, Copy Blob with its status, Delete
//! Blob with its 404 — sent over object_store's own HTTP client and signed by
//! its [`AzureAuthorizer`] with its credential provider, so every auth method
//! object_store supports (shared key, SAS, Entra ID tokens) works here too.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use object_store::{
    azure::{AzureAuthorizer, AzureCredentialProvider},
    client::{HttpClient, HttpRequestBody, HttpResponse},
};
use tokio_util::task::TaskTracker;
use url::Url;

use super::super::{Result, StorageError};

/// Attempts for one call; transient failures (5xx, 408, 429, transport) retry.
const ATTEMPTS: u32 = 4;

pub(super) fn backend(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("azure {what}: {e}"))
}

/// A block of the committed list: its id (base64, as the service returns it) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub id: String,
    pub size: u64,
}

/// A blob's committed block list and what else one Get Block List tells.
#[derive(Debug, Clone)]
pub(super) struct BlockList {
    pub blocks: Vec<Block>,
    /// Size of the blob (which exceeds the blocks' sum for a blob from Put
    /// Blob), when the service says.
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// What a Put Block List did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listed {
    /// The blob is the list, committed.
    Committed,
    /// Its condition did not hold (412, or 409 BlobAlreadyExists).
    Refused,
    /// A block it names as uncommitted is not staged on the blob (400
    /// InvalidBlockList): another commit at this name discarded it (a
    /// Put Block List drops every uncommitted block it does not name), or
    /// an earlier attempt of this same call landed and committed it.
    BlocksGone,
}

/// Whether Put Block List may replace what is there.
pub(super) enum Condition {
    /// The blob must still carry this ETag.
    IfMatch(String),
    /// The blob must not exist yet.
    IfNoneMatch,
    None,
}

pub(super) struct Rest {
    pub http: HttpClient,
    pub credentials: AzureCredentialProvider,
    pub account: String,
    /// `<serviceurl>/<container>`
    pub container_url: Url,
    /// Put Block calls that writers send while they fill their next block;
    /// a dropped writer aborts its own ([`super::AzureDriver::settled`]
    /// waits until they are gone).
    pub tasks: TaskTracker,
}

impl Rest {
    pub fn blob_url(&self, key: &str) -> Url {
        let mut url = self.container_url.clone();
        url.path_segments_mut()
            .expect("http URL has path segments")
            .extend(key.split('/'));
        url
    }

    /// Sign and send, retrying transient failures with a short backoff.
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<HttpResponse> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credential = self
                .credentials
                .get_credential()
                .await
                .map_err(|e| backend(what, e))?;
            let mut req = Request::builder().method(method.clone()).uri(url.as_str());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if !body.is_empty() || matches!(method, Method::PUT) {
                req = req.header(header::CONTENT_LENGTH, body.len());
            }
            let mut req = req
                .body(HttpRequestBody::from(body.clone()))
                .map_err(|e| backend(what, e))?;
            AzureAuthorizer::new(&credential, &self.account)
                .try_authorize(&mut req)
                .map_err(|e| backend(what, e))?;
            let transient = match self.http.execute(req).await {
                Ok(resp) => {
                    let s = resp.status();
                    if !(s.is_server_error()
                        || s == StatusCode::REQUEST_TIMEOUT
                        || s == StatusCode::TOO_MANY_REQUESTS)
                        || attempt >= ATTEMPTS
                    {
                        return Ok(resp);
                    }
                    format!("HTTP {s}")
                }
                Err(e) if attempt >= ATTEMPTS => return Err(backend(what, e)),
                Err(e) => e.to_string(),
            };
            let delay = Duration::from_millis(100 * 4u64.pow(attempt - 1));
            tracing::debug!(what, attempt, error = %transient, ?delay, "azure: retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The error for an unexpected answer, with the service's error code.
    async fn unexpected(what: &str, resp: HttpResponse) -> StorageError {
        let status = resp.status();
        let code = error_code(resp.headers());
        let body = resp.into_body().bytes().await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        // One line: the service's <Message> (less its request id), else the body.
        let text = match (body.find("<Message>"), body.find("</Message>")) {
            (Some(a), Some(b)) if a < b => &body[a + "<Message>".len()..b],
            _ => &body[..],
        };
        let text: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        backend(what, format!("HTTP {status} {code}: {text}"))
    }

    /// Get Block List (committed); `None` if the blob does not exist.
    pub async fn block_list(&self, key: &str) -> Result<Option<BlockList>> {
        self.get_block_list(key, "committed").await
    }

    /// The blocks staged at `key` and not committed (Get Block List,
    /// uncommitted); `None` when there is neither a blob nor a staged block.
    pub async fn uncommitted(&self, key: &str) -> Result<Option<Vec<Block>>> {
        Ok(self
            .get_block_list(key, "uncommitted")
            .await?
            .map(|l| l.blocks))
    }

    /// Get Block List of one `list_type`: its blocks in `blocks`.
    async fn get_block_list(&self, key: &str, list_type: &str) -> Result<Option<BlockList>> {
        let mut url = self.blob_url(key);
        url.query_pairs_mut()
            .append_pair("comp", "blocklist")
            .append_pair("blocklisttype", list_type);
        let resp = self
            .send("get block list", Method::GET, &url, &[], Bytes::new())
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(Self::unexpected("get block list", resp).await),
        }
        let size = header_str(resp.headers(), "x-ms-blob-content-length")
            .and_then(|s| s.parse::<u64>().ok());
        let etag = header_str(resp.headers(), "etag").map(str::to_string);
        let body = resp
            .into_body()
            .bytes()
            .await
            .map_err(|e| backend("get block list", e))?;
        let section = if list_type == "committed" {
            "CommittedBlocks"
        } else {
            "UncommittedBlocks"
        };
        let blocks = parse_blocks(&String::from_utf8_lossy(&body), section)
            .ok_or_else(|| backend("get block list", "unreadable XML"))?;
        Ok(Some(BlockList { blocks, size, etag }))
    }

    /// Put Block: stage `data` under `id` (base64).
    pub async fn put_block(&self, key: &str, id: &str, data: Bytes) -> Result<()> {
        let mut url = self.blob_url(key);
        url.query_pairs_mut()
            .append_pair("comp", "block")
            .append_pair("blockid", id);
        let resp = self.send("put block", Method::PUT, &url, &[], data).await?;
        if resp.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(Self::unexpected("put block", resp).await)
        }
    }

    /// Put Blob: the blob becomes `data`, whole, replacing what was there
    /// (and discarding blocks staged at its name).
    pub async fn put_blob(&self, key: &str, data: Bytes) -> Result<()> {
        let url = self.blob_url(key);
        let resp = self
            .send(
                "put blob",
                Method::PUT,
                &url,
                &[("x-ms-blob-type", "BlockBlob")],
                data,
            )
            .await?;
        if resp.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(Self::unexpected("put blob", resp).await)
        }
    }

    /// Put Block List: the blob becomes `committed` (kept from its committed
    /// list) followed by `staged` (uncommitted blocks), atomically.
    pub async fn put_block_list(
        &self,
        key: &str,
        committed: &[String],
        staged: &[String],
        condition: &Condition,
    ) -> Result<Listed> {
        let mut xml = String::with_capacity(64 + 96 * (committed.len() + staged.len()));
        xml.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in committed {
            xml.push_str(&format!("<Committed>{id}</Committed>"));
        }
        for id in staged {
            xml.push_str(&format!("<Uncommitted>{id}</Uncommitted>"));
        }
        xml.push_str("</BlockList>");
        let mut url = self.blob_url(key);
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let cond: Vec<(&str, &str)> = match condition {
            Condition::IfMatch(etag) => vec![("if-match", etag.as_str())],
            Condition::IfNoneMatch => vec![("if-none-match", "*")],
            Condition::None => vec![],
        };
        let resp = self
            .send(
                "put block list",
                Method::PUT,
                &url,
                &cond,
                Bytes::from(xml.into_bytes()),
            )
            .await?;
        let code = error_code(resp.headers());
        match resp.status() {
            StatusCode::CREATED => Ok(Listed::Committed),
            StatusCode::PRECONDITION_FAILED => Ok(Listed::Refused),
            StatusCode::CONFLICT if code == "BlobAlreadyExists" => Ok(Listed::Refused),
            StatusCode::BAD_REQUEST if code == "InvalidBlockList" => Ok(Listed::BlocksGone),
            _ => Err(Self::unexpected("put block list", resp).await),
        }
    }

    /// Delete Blob (and its snapshots). False if there was none.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let url = self.blob_url(key);
        let resp = self
            .send(
                "delete",
                Method::DELETE,
                &url,
                &[("x-ms-delete-snapshots", "include")],
                Bytes::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::unexpected("delete", resp).await),
        }
    }

    /// Copy Blob `from` → `to` (same account), waiting for a copy Azure runs
    /// asynchronously. False if `from` does not exist.
    pub async fn copy(&self, from: &str, to: &str, polls: u32, delay: Duration) -> Result<bool> {
        let mut source = self.blob_url(from);
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| backend("copy", e))?;
        // A SAS must travel on the source URL too.
        if let object_store::azure::AzureCredential::SASToken(pairs) = &*credential {
            source.query_pairs_mut().extend_pairs(pairs);
        }
        let dest = self.blob_url(to);
        let resp = self
            .send(
                "copy",
                Method::PUT,
                &dest,
                &[("x-ms-copy-source", source.as_str())],
                Bytes::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::CREATED => {}
            StatusCode::NOT_FOUND => {
                // The source is missing (CannotVerifyCopySource / BlobNotFound);
                // a missing container is a configuration error worth its own message.
                return if error_code(resp.headers()) == "ContainerNotFound" {
                    Err(Self::unexpected("copy", resp).await)
                } else {
                    Ok(false)
                };
            }
            _ => return Err(Self::unexpected("copy", resp).await),
        }
        let mut status = header_str(resp.headers(), "x-ms-copy-status")
            .unwrap_or("success")
            .to_string();
        let mut polled = 0;
        while status == "pending" {
            if polled >= polls {
                return Err(backend(
                    "copy",
                    format!("{from} → {to} still pending after {polls} polls"),
                ));
            }
            polled += 1;
            tokio::time::sleep(delay * polled).await;
            let resp = self
                .send("copy status", Method::HEAD, &dest, &[], Bytes::new())
                .await?;
            if resp.status() != StatusCode::OK {
                return Err(Self::unexpected("copy status", resp).await);
            }
            status = header_str(resp.headers(), "x-ms-copy-status")
                .unwrap_or("success")
                .to_string();
        }
        if status != "success" {
            return Err(backend("copy", format!("{from} → {to}: copy {status}")));
        }
        Ok(true)
    }

    /// Create Container; an existing one is fine.
    pub async fn create_container(&self) -> Result<()> {
        let mut url = self.container_url.clone();
        url.query_pairs_mut().append_pair("restype", "container");
        let resp = self
            .send("create container", Method::PUT, &url, &[], Bytes::new())
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::CONFLICT => Ok(()),
            _ => Err(Self::unexpected("create container", resp).await),
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn error_code(h: &HeaderMap) -> String {
    header_str(h, "x-ms-error-code").unwrap_or("").to_string()
}

/// The blocks of one `section` (`CommittedBlocks`, `UncommittedBlocks`) of a
/// Get Block List answer. Block names are base64 and sizes decimal, so a
/// small scanner is enough.
pub(super) fn parse_blocks(xml: &str, section: &str) -> Option<Vec<Block>> {
    if !xml.contains("<BlockList") {
        return None;
    }
    let section = match (
        xml.find(&format!("<{section}>")),
        xml.find(&format!("</{section}>")),
    ) {
        (Some(a), Some(b)) if a < b => &xml[a..b],
        _ => return Some(Vec::new()), // `<CommittedBlocks />` or absent: none
    };
    let inner = |s: &str, tag: &str| -> Option<String> {
        let open = format!("<{tag}>");
        let a = s.find(&open)? + open.len();
        let b = a + s[a..].find(&format!("</{tag}>"))?;
        Some(s[a..b].trim().to_string())
    };
    let mut blocks = Vec::new();
    for part in section.split("<Block>").skip(1) {
        blocks.push(Block {
            id: inner(part, "Name")?,
            size: inner(part, "Size")?.parse().ok()?,
        });
    }
    Some(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_section() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<BlockList><CommittedBlocks><Block><Name>QUFB</Name><Size>4194304</Size></Block>
<Block><Name>QkJC+/==</Name><Size>7</Size></Block></CommittedBlocks>
<UncommittedBlocks><Block><Name>Q0ND</Name><Size>1</Size></Block></UncommittedBlocks></BlockList>"#;
        assert_eq!(
            parse_blocks(xml, "CommittedBlocks").unwrap(),
            [
                Block {
                    id: "QUFB".into(),
                    size: 4_194_304
                },
                Block {
                    id: "QkJC+/==".into(),
                    size: 7
                }
            ]
        );
        assert_eq!(
            parse_blocks(xml, "UncommittedBlocks").unwrap(),
            [Block {
                id: "Q0ND".into(),
                size: 1
            }]
        );
        assert_eq!(
            parse_blocks(
                "<BlockList><CommittedBlocks /></BlockList>",
                "CommittedBlocks"
            )
            .unwrap(),
            []
        );
        assert!(parse_blocks("<html>proxy error</html>", "CommittedBlocks").is_none());
        assert!(parse_blocks(
            "<BlockList><CommittedBlocks><Block><Name>x</Name><Size>big</Size></Block></CommittedBlocks></BlockList>",
            "CommittedBlocks"
        )
        .is_none());
    }
}
