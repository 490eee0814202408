//! Blob GET/HEAD (with Range) and DELETE.

use axum::{
    body::Body,
    extract::Request,
    http::{header, Method, StatusCode},
    response::IntoResponse,
};

use super::{
    error::ApiResult,
    header_str,
    ranges::{parse_range, RangeRequest},
    AppState,
};
use crate::{
    notify::event::RequestContext,
    registry::{
        digest::Digest,
        error::{Code, Error},
    },
};

pub async fn get(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    digest: &str,
    req: Request,
) -> ApiResult {
    let d: Digest = digest.parse()?;
    let reg = &state.registry;
    let (info, cache) = reg.find_blob(name, &d).await?;
    let head = req.method() == Method::HEAD;
    if !head {
        if let Some(url) = reg.blob_redirect(&d, "GET").await? {
            state.notifier.blob_pulled(ctx, name, &d, info.size, cache);
            return Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, url)]).into_response());
        }
    }
    let common = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (
            header::HeaderName::from_static("docker-content-digest"),
            d.to_string(),
        ),
        (header::ETAG, format!("\"{d}\"")),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CACHE_CONTROL, "max-age=31536000".to_string()),
    ];
    // A malformed Range is ignored (RFC 9110 §14.2): the whole blob.
    let range =
        header_str(&req, "range").map_or(RangeRequest::Whole, |r| parse_range(r, info.size));
    let (status, start, len) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, info.size),
        RangeRequest::Part { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
        RangeRequest::Unsatisfiable => {
            let mut resp =
                Error::new(Code::RangeInvalid, "requested range not satisfiable").into_response();
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes */{}", info.size).parse().unwrap(),
            );
            return Ok(resp);
        }
    };
    let body = if head {
        Body::empty()
    } else {
        let stream = reg.read_blob(&d, start, Some(len)).await?;
        // A pull is a GET served (ranges included, as distribution counts them).
        state.notifier.blob_pulled(ctx, name, &d, info.size, cache);
        Body::from_stream(stream)
    };
    let mut resp = (status, common, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    if let RangeRequest::Part { .. } = range {
        let v = format!("bytes {}-{}/{}", start, start + len - 1, info.size);
        h.insert(header::CONTENT_RANGE, v.parse().unwrap());
    }
    Ok(resp)
}

pub async fn delete(state: &AppState, ctx: &RequestContext, name: &str, digest: &str) -> ApiResult {
    let d: Digest = digest.parse()?;
    state.registry.delete_blob(name, &d).await?;
    state.notifier.blob_deleted(ctx, name, &d);
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}
