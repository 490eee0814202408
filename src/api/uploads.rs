//! Blob uploads: POST (session, monolithic `?digest=`, cross-repo `?mount=`),
//! PATCH (chunks), PUT (finish), GET (status), DELETE (cancel).

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;

use super::{error::ApiResult, header_str, query_param, AppState};
use crate::{
    notify::event::RequestContext,
    registry::{
        blobs::BlobInfo,
        digest::Digest,
        error::{Code, Error},
        upload::ChunkRange,
        upload_state::UploadState,
    },
    storage::ByteStream,
};

const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

fn body_stream(req: Request) -> ByteStream {
    Box::pin(
        req.into_body()
            .into_data_stream()
            .map_err(std::io::Error::other),
    )
}

/// `Content-Range: <start>-<end>` (docker's form; `bytes ` and `/total` tolerated).
fn content_range(req: &Request) -> Result<Option<ChunkRange>, Error> {
    let Some(v) = header_str(req, "content-range") else {
        return Ok(None);
    };
    let bad = || {
        Error::new(
            Code::BlobUploadInvalid,
            format!("malformed Content-Range {v:?}"),
        )
    };
    let v = v
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches(['=', ' ']);
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    Ok(Some(ChunkRange {
        start: a.trim().parse().map_err(|_| bad())?,
        end: b.trim().parse().map_err(|_| bad())?,
    }))
}

fn upload_location(state: &AppState, headers: &HeaderMap, s: &UploadState) -> String {
    let token = s.sign(state.registry.secret());
    let path = format!("/v2/{}/blobs/uploads/{}?_state={}", s.name, s.id, token);
    state.urls.build(headers, &path)
}

/// distribution's Range for an upload: the last byte received, `0-0` when none.
fn upload_range(s: &UploadState) -> String {
    format!("0-{}", s.offset.saturating_sub(1))
}

fn in_progress(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    s: &UploadState,
) -> Response {
    (
        status,
        [
            (header::LOCATION, upload_location(state, headers, s)),
            (header::RANGE, upload_range(s)),
            (UPLOAD_UUID, s.id.clone()),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response()
}

fn created(state: &AppState, headers: &HeaderMap, name: &str, blob: &BlobInfo) -> Response {
    let location = state
        .urls
        .build(headers, &format!("/v2/{name}/blobs/{}", blob.digest));
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (CONTENT_DIGEST, blob.digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response()
}

pub async fn start(state: &AppState, ctx: &RequestContext, name: &str, req: Request) -> ApiResult {
    let reg = &state.registry;
    let headers = req.headers().clone();
    if let Some(mount) = query_param(&req, "mount") {
        let d: Digest = mount.parse()?;
        if let Some(from) = query_param(&req, "from") {
            if let Some(blob) = reg.mount_blob(name, &d, &from).await? {
                state
                    .notifier
                    .blob_mounted(ctx, name, &blob.digest, blob.size, &from);
                return Ok(created(state, &headers, name, &blob));
            }
        }
        // Not mountable: the spec says fall back to an ordinary upload session.
    } else if let Some(digest) = query_param(&req, "digest") {
        let d: Digest = digest.parse()?;
        let session = reg.start_upload(name).await?;
        let blob = reg
            .finish_upload(session, &d, None, body_stream(req))
            .await?;
        state
            .notifier
            .blob_pushed(ctx, name, &blob.digest, blob.size);
        return Ok(created(state, &headers, name, &blob));
    }
    let session = reg.start_upload(name).await?;
    Ok(in_progress(state, &headers, StatusCode::ACCEPTED, &session))
}

/// The upload's signed state from the `_state` query parameter.
async fn resume(
    state: &AppState,
    name: &str,
    id: &str,
    token: Option<String>,
) -> Result<UploadState, Error> {
    let token = token.ok_or_else(|| {
        Error::new(
            Code::BlobUploadUnknown,
            "upload unknown: no upload state in URL",
        )
    })?;
    state.registry.resume_upload(name, id, &token).await
}

pub async fn patch(state: &AppState, name: &str, id: &str, req: Request) -> ApiResult {
    let session = resume(state, name, id, query_param(&req, "_state")).await?;
    let range = content_range(&req)?;
    let headers = req.headers().clone();
    let session = state
        .registry
        .append_upload(session, range, body_stream(req))
        .await?;
    Ok(in_progress(state, &headers, StatusCode::ACCEPTED, &session))
}

pub async fn put(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    id: &str,
    req: Request,
) -> ApiResult {
    let session = resume(state, name, id, query_param(&req, "_state")).await?;
    let d: Digest = query_param(&req, "digest")
        .ok_or_else(|| Error::new(Code::DigestInvalid, "digest query parameter is required"))?
        .parse()?;
    let range = content_range(&req)?;
    let headers = req.headers().clone();
    let blob = state
        .registry
        .finish_upload(session, &d, range, body_stream(req))
        .await?;
    state
        .notifier
        .blob_pushed(ctx, name, &blob.digest, blob.size);
    Ok(created(state, &headers, name, &blob))
}

pub async fn status(state: &AppState, name: &str, id: &str, req: Request) -> ApiResult {
    let session = resume(state, name, id, query_param(&req, "_state")).await?;
    Ok(in_progress(
        state,
        req.headers(),
        StatusCode::NO_CONTENT,
        &session,
    ))
}

pub async fn cancel(state: &AppState, name: &str, id: &str, req: Request<Body>) -> ApiResult {
    let session = resume(state, name, id, query_param(&req, "_state")).await?;
    state.registry.cancel_upload(&session).await?;
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
}
