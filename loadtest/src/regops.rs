//! Registry operations as docker performs them, on a [`Session`]: blob HEAD,
//! cross-repository mount, upload (POST, one streamed PATCH, PUT ?digest=;
//! or the whole blob in the PUT, or in one POST ?digest=), manifest
//! PUT/GET/HEAD and blob GET. Each returns the payload bytes moved,
//! for the MB/s figures; a status other than the expected one is an error.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::{header, HeaderName, Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{
    data::{hex, BlobData},
    http::{
        digest_body, drain, expect, location, read_body, with_query, Client, ReqBody, Unexpected,
    },
    regclient::{Endpoint, Session},
    workloads::{MANIFEST_ACCEPT, OCI_MANIFEST},
};

const OCTET: (HeaderName, &str) = (header::CONTENT_TYPE, "application/octet-stream");
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

fn empty() -> ReqBody {
    ReqBody::Empty
}

/// HEAD a blob: present (200) or absent (404).
pub async fn blob_exists(s: &mut Session, repo: &str, digest: &str) -> Result<bool> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = s.send(Method::HEAD, &path, &[], &empty).await?;
    let status = resp.status();
    drain(resp, None).await?;
    match status {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        other => Err(Unexpected {
            what: "HEAD blob".into(),
            want: StatusCode::OK,
            status: other,
            body: String::new(),
            retry_after: None,
        }
        .into()),
    }
}

/// HEAD a manifest by tag; must be there.
pub async fn manifest_head(s: &mut Session, repo: &str, reference: &str) -> Result<()> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let accept = [(header::ACCEPT, MANIFEST_ACCEPT)];
    let resp = s.send(Method::HEAD, &path, &accept, &empty).await?;
    drain(expect(resp, StatusCode::OK, "HEAD manifest").await?, None).await?;
    Ok(())
}

/// What a mount attempt gave: the blob is linked, or an upload session to
/// push it into (the registry did not mount it).
pub enum Mount {
    Mounted,
    Upload(String),
}

/// `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>` (docker tries
/// this for a layer it knows lives in another repository of the registry).
pub async fn mount(s: &mut Session, repo: &str, digest: &str, from: &str) -> Result<Mount> {
    let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
    let resp = s.send(Method::POST, &path, &[], &empty).await?;
    match resp.status() {
        StatusCode::CREATED => {
            drain(resp, None).await?;
            Ok(Mount::Mounted)
        }
        StatusCode::ACCEPTED => {
            let loc = location(&resp)?;
            drain(resp, None).await?;
            Ok(Mount::Upload(loc))
        }
        _ => {
            expect(resp, StatusCode::CREATED, "POST mount").await?;
            unreachable!("expect fails on any other status")
        }
    }
}

/// `POST /v2/<repo>/blobs/uploads/`: the upload session's Location.
pub async fn start_upload(s: &mut Session, repo: &str) -> Result<String> {
    let path = format!("/v2/{repo}/blobs/uploads/");
    let resp = s.send(Method::POST, &path, &[], &empty).await?;
    let resp = expect(resp, StatusCode::ACCEPTED, "POST upload").await?;
    let loc = location(&resp)?;
    drain(resp, None).await?;
    Ok(loc)
}

/// Stream `blob` into the session at `loc` in one PATCH, digesting it on the
/// way (as docker does), then close it with `PUT ?digest=`. If `known` is
/// given the computed digest must match it. The blob's digest.
pub async fn upload(
    s: &mut Session,
    loc: &str,
    blob: &BlobData,
    known: Option<&str>,
) -> Result<String> {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let body = || {
        // A retried attempt (after an auth challenge) starts the digest over.
        *hasher.lock().expect("hasher lock") = Sha256::new();
        ReqBody::blob_range(blob, 0, blob.size(), None).hashing(&hasher)
    };
    let resp = s.send(Method::PATCH, loc, &[OCTET], &body).await?;
    let resp = expect(resp, StatusCode::ACCEPTED, "PATCH upload").await?;
    let loc = location(&resp)?;
    drain(resp, None).await?;
    let sum = hasher.lock().expect("hasher lock").clone().finalize();
    let digest = format!("sha256:{}", hex(sum.as_slice()));
    if let Some(k) = known {
        if k != digest {
            bail!("client bug: streamed {digest}, expected {k}");
        }
    }
    let resp = s
        .send(
            Method::PUT,
            &with_query(&loc, "digest", &digest),
            &[],
            &empty,
        )
        .await?;
    drain(expect(resp, StatusCode::CREATED, "PUT upload").await?, None).await?;
    Ok(digest)
}

/// A small blob (config) in one `PUT ?digest=` after the POST.
pub async fn put_small(s: &mut Session, loc: &str, data: &Bytes, digest: &str) -> Result<()> {
    put_whole(s, loc, &|| ReqBody::full(data.clone()), digest).await
}

/// A whole blob (`body` makes it) in the `PUT ?digest=` that closes the
/// session at `loc` (docker's monolithic push).
pub async fn put_whole(
    s: &mut Session,
    loc: &str,
    body: &dyn Fn() -> ReqBody,
    digest: &str,
) -> Result<()> {
    let path = with_query(loc, "digest", digest);
    send_whole(s, Method::PUT, &path, body, "PUT blob").await
}

/// A whole blob in one request, no session: `POST
/// /v2/<repo>/blobs/uploads/?digest=<digest>` with the body (the spec's
/// single-POST monolithic upload).
pub async fn post_whole(
    s: &mut Session,
    repo: &str,
    body: &dyn Fn() -> ReqBody,
    digest: &str,
) -> Result<()> {
    let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    send_whole(s, Method::POST, &path, body, "POST blob").await
}

/// A request carrying a whole blob, answered 201 when it is in.
async fn send_whole(
    s: &mut Session,
    method: Method,
    path: &str,
    body: &dyn Fn() -> ReqBody,
    what: &str,
) -> Result<()> {
    let resp = s.send(method, path, &[OCTET], body).await?;
    drain(expect(resp, StatusCode::CREATED, what).await?, None).await?;
    Ok(())
}

pub async fn put_manifest(s: &mut Session, repo: &str, tag: &str, body: &Bytes) -> Result<()> {
    let path = format!("/v2/{repo}/manifests/{tag}");
    let make = || ReqBody::full(body.clone());
    let resp = s
        .send(
            Method::PUT,
            &path,
            &[(header::CONTENT_TYPE, OCI_MANIFEST)],
            &make,
        )
        .await?;
    drain(
        expect(resp, StatusCode::CREATED, "PUT manifest").await?,
        None,
    )
    .await?;
    Ok(())
}

/// GET a manifest: its status and (for 200) its bytes.
pub async fn get_manifest(
    s: &mut Session,
    repo: &str,
    reference: &str,
) -> Result<(StatusCode, Bytes)> {
    let resp = manifest_response(s, repo, reference).await?;
    let status = resp.status();
    Ok((status, read_body(resp).await?))
}

/// GET a manifest that must be there (200, else [`Unexpected`]): its bytes.
pub async fn get_manifest_ok(s: &mut Session, repo: &str, reference: &str) -> Result<Bytes> {
    let resp = manifest_response(s, repo, reference).await?;
    read_body(expect(resp, StatusCode::OK, "GET manifest").await?).await
}

async fn manifest_response(
    s: &mut Session,
    repo: &str,
    reference: &str,
) -> Result<Response<Incoming>> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let accept = [(header::ACCEPT, MANIFEST_ACCEPT)];
    s.send(Method::GET, &path, &accept, &empty).await
}

/// GET a blob, streamed and discarded; its length must be `size`.
pub async fn get_blob(s: &mut Session, repo: &str, digest: &str, size: u64) -> Result<u64> {
    let n = drain(blob_response(s, repo, digest).await?, None).await?;
    if n != size {
        bail!("GET blob {digest}: {n} bytes, expected {size}");
    }
    Ok(n)
}

/// GET a blob, hashing it as it streams: its length and the digest of the
/// bytes served (the caller compares them with what it asked for).
pub async fn get_blob_digest(s: &mut Session, repo: &str, digest: &str) -> Result<(u64, String)> {
    digest_body(blob_response(s, repo, digest).await?).await
}

/// A blob GET's 200 response, following a storage redirect.
async fn blob_response(s: &mut Session, repo: &str, digest: &str) -> Result<Response<Incoming>> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = s.send(Method::GET, &path, &[], &empty).await?;
    let resp = if resp.status().is_redirection() {
        // Storage redirects (S3, a CDN): followed without the registry's
        // credentials, as docker does.
        let to = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .context("redirect without Location")?;
        drain(resp, None).await?;
        let (ep, path) = Endpoint::resolve(&to).await?;
        let mut c = Client::new(ep.addr).with_host(&ep.authority)?;
        c.send(Method::GET, &path, &[], ReqBody::Empty).await?
    } else {
        resp
    };
    expect(resp, StatusCode::OK, "GET blob").await
}

/// A descriptor as manifests list them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: String,
    pub size: u64,
}

/// An OCI image manifest for a config and layers.
pub fn image_manifest(config: &Descriptor, layers: &[Descriptor]) -> Bytes {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| json!({"mediaType": LAYER_TYPE, "digest": l.digest, "size": l.size}))
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
        "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&m).expect("a JSON value serialises"))
}

/// An image config naming its layers, unique per `id`.
pub fn image_config(id: &str, layers: &[Descriptor]) -> Bytes {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let c = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"loadtest": id}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    Bytes::from(serde_json::to_vec(&c).expect("a JSON value serialises"))
}

/// The config and layers a manifest refers to (what a pull fetches).
pub fn manifest_blobs(manifest: &[u8]) -> Result<Vec<Descriptor>> {
    let v: serde_json::Value = serde_json::from_slice(manifest).context("manifest JSON")?;
    let desc = |d: &serde_json::Value| -> Result<Descriptor> {
        Ok(Descriptor {
            digest: d["digest"]
                .as_str()
                .context("descriptor digest")?
                .to_string(),
            size: d["size"].as_u64().context("descriptor size")?,
        })
    };
    let mut out = vec![desc(&v["config"])?];
    for l in v["layers"].as_array().context("manifest layers")? {
        out.push(desc(l)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip() {
        let d = |c: char, size| Descriptor {
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size,
        };
        let layers = [d('a', 10), d('b', 20)];
        let m = image_manifest(&d('c', 5), &layers);
        assert_eq!(
            manifest_blobs(&m).unwrap(),
            vec![d('c', 5), d('a', 10), d('b', 20)]
        );
        assert!(manifest_blobs(b"{\"config\":{}}").is_err());
        assert_ne!(image_config("x", &layers), image_config("y", &layers));
    }
}
