//! Blob uploads: POST (session, monolithic `?digest=`, cross-repo `?mount=`),
//! PATCH (chunks), PUT (finish), GET (status), DELETE (cancel).

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;

use super::{
    error::{upload_range, ApiResult},
    header_str, query_param,
    ranges::parse_content_range,
    AppState,
};
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

/// The chunk a request says it carries: its `Content-Range`, which a
/// `Content-Length`, when sent, must agree with (refused before any byte is
/// written, as distribution does).
fn chunk_range(req: &Request) -> Result<Option<ChunkRange>, Error> {
    let Some(v) = header_str(req, "content-range") else {
        return Ok(None);
    };
    let range = parse_content_range(v)?;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = length.filter(|&l| l != range.length()) {
        return Err(Error::new(
            Code::SizeInvalid,
            format!(
                "Content-Length {length} does not match Content-Range {}-{}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Some(range))
}

fn upload_location(state: &AppState, headers: &HeaderMap, s: &UploadState) -> String {
    let token = s.sign(state.registry.secret());
    let path = format!("/v2/{}/blobs/uploads/{}?_state={}", s.name, s.id, token);
    state.urls.build(headers, &path)
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
            (header::RANGE, upload_range(s.offset)),
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
        let blob = reg.push_blob(name, &d, body_stream(req)).await?;
        state
            .notifier
            .blob_pushed(ctx, name, &blob.digest, blob.size);
        return Ok(created(state, &headers, name, &blob));
    }
    let session = reg.start_upload(name).await?;
    Ok(in_progress(state, &headers, StatusCode::ACCEPTED, &session))
}

/// The upload's signed state from the `_state` query parameter.
fn token(req: &Request) -> Result<String, Error> {
    query_param(req, "_state").ok_or_else(|| {
        Error::new(
            Code::BlobUploadUnknown,
            "upload unknown: no upload state in URL",
        )
    })
}

pub async fn patch(state: &AppState, name: &str, id: &str, req: Request) -> ApiResult {
    let range = chunk_range(&req)?;
    let token = token(&req)?;
    // Its Location must be current (see `Registry::resume_upload`).
    let session = state.registry.resume_upload(name, id, &token).await?;
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
    let d: Digest = query_param(&req, "digest")
        .ok_or_else(|| Error::new(Code::DigestInvalid, "digest query parameter is required"))?
        .parse()?;
    let range = chunk_range(&req)?;
    let token = token(&req)?;
    // Its Location must be current (see `Registry::resume_upload`).
    let session = state.registry.resume_upload(name, id, &token).await?;
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

/// Where the upload stands in storage, with a fresh Location to resume at
/// (the way back for a client whose Location went stale).
pub async fn status(state: &AppState, name: &str, id: &str, req: Request) -> ApiResult {
    let token = token(&req)?;
    let session = state.registry.upload_status(name, id, &token).await?;
    Ok(in_progress(
        state,
        req.headers(),
        StatusCode::NO_CONTENT,
        &session,
    ))
}

pub async fn cancel(state: &AppState, name: &str, id: &str, req: Request<Body>) -> ApiResult {
    // Whatever its offset: a stale Location may still cancel.
    let token = token(&req)?;
    let session = state.registry.upload_status(name, id, &token).await?;
    state.registry.cancel_upload(&session).await?;
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
}
