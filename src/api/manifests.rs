//! Manifests: GET/HEAD with content negotiation, PUT, DELETE — by tag or digest.

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{header, HeaderName, Method, StatusCode},
    response::IntoResponse,
};

use bytes::BytesMut;
use futures::StreamExt;

use super::{error::ApiResult, header_str, AppState};
use crate::{
    notify::event::RequestContext,
    registry::{
        error::{Code, Error},
        manifest::{bare_media_type, Manifest, MAX_MANIFEST_SIZE},
        manifests::Reference,
    },
};

const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");

/// Does the request's Accept list (if any) take `media_type`? No Accept header
/// means anything goes, as with distribution.
fn accepts(req: &Request, media_type: &str) -> bool {
    let mut any_listed = false;
    for value in req.headers().get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for t in value
            .split(',')
            .map(bare_media_type)
            .filter(|t| !t.is_empty())
        {
            any_listed = true;
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
        }
    }
    !any_listed
}

/// The tag a request named, for events (none when it named a digest).
fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    }
}

pub async fn get(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    reference: &str,
    req: Request,
) -> ApiResult {
    // No manifest can be stored under a reference that does not parse: it
    // is unknown (what both the old and the new conformance suites accept).
    let reference = Reference::parse(reference).map_err(|e| {
        Error::new(
            Code::ManifestUnknown,
            format!("manifest unknown: {}", e.message),
        )
    })?;
    let m = state.registry.get_manifest(name, &reference).await?;
    if !accepts(&req, &m.media_type) {
        return Err(Error::new(
            Code::ManifestUnknown,
            format!(
                "manifest is {}, which the Accept header does not allow",
                m.media_type
            ),
        ));
    }
    let len = m.body.len();
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        state
            .notifier
            .manifest_pulled(ctx, name, &m, tag_of(&reference));
        Body::from(m.body)
    };
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, m.media_type),
            (CONTENT_DIGEST, m.digest.to_string()),
            (header::ETAG, format!("\"{}\"", m.digest)),
        ],
        body,
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    Ok(resp)
}

/// The whole manifest body, at most [`MAX_MANIFEST_SIZE`] bytes: a larger
/// one is 413 once the limit is passed (read that far, not refused on its
/// Content-Length, so a client still sending sees the answer rather than a
/// broken pipe), one that breaks off is 400 MANIFEST_INVALID.
async fn read_manifest_body(body: Body) -> Result<Bytes, Error> {
    let too_large = || {
        Error::new(
            Code::ManifestInvalid,
            format!("manifest exceeds the {MAX_MANIFEST_SIZE}-byte limit"),
        )
        .with_status(413)
    };
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Error::new(
                Code::ManifestInvalid,
                format!("the manifest body could not be read whole: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > MAX_MANIFEST_SIZE {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub async fn put(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    reference: &str,
    req: Request,
) -> ApiResult {
    let reference = Reference::parse(reference)?;
    let content_type = header_str(&req, "content-type").map(str::to_string);
    let headers = req.headers().clone();
    let body = read_manifest_body(req.into_body()).await?;
    let media_type = content_type
        .as_deref()
        .map(bare_media_type)
        .filter(|t| !t.is_empty())
        .map_or_else(|| Manifest::media_type_of(&body), str::to_string);
    let put = state
        .registry
        .put_manifest(name, &reference, content_type.as_deref(), body.clone())
        .await?;
    state.notifier.manifest_pushed(
        ctx,
        name,
        &put.digest,
        &media_type,
        &body,
        tag_of(&reference),
    );
    let location = state
        .urls
        .build(&headers, &format!("/v2/{name}/manifests/{}", put.digest));
    let mut resp = (
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (CONTENT_DIGEST, put.digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response();
    if let Some(subject) = put.subject {
        resp.headers_mut()
            .insert(OCI_SUBJECT, subject.to_string().parse().unwrap());
    }
    Ok(resp)
}

pub async fn delete(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    reference: &str,
) -> ApiResult {
    let reference = Reference::parse(reference)?;
    let untagged = state.registry.delete_manifest(name, &reference).await?;
    match &reference {
        Reference::Tag(tag) => state.notifier.tag_deleted(ctx, name, tag),
        Reference::Digest(d) => state.notifier.manifest_deleted(ctx, name, d, &untagged),
    }
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}
