//! Blob GET/HEAD (with Range) and DELETE.

use axum::{
    body::Body,
    extract::Request,
    http::{header, Method, StatusCode},
    response::IntoResponse,
};

use super::{error::ApiResult, header_str, AppState};
use crate::{
    notify::event::RequestContext,
    registry::{
        digest::Digest,
        error::{Code, Error},
    },
};

/// A satisfiable byte range: first byte and length.
#[derive(Debug, PartialEq, Eq)]
struct ByteRange {
    start: u64,
    len: u64,
}

/// Parse a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against `size`.
/// `Ok(None)`: no usable range (serve the whole blob); `Err`: unsatisfiable.
fn parse_range(value: &str, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole blob
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().map_err(|_| ())?
        };
        (start, end.min(size.saturating_sub(1)))
    };
    if start >= size || end < start {
        return Err(());
    }
    Ok(Some(ByteRange {
        start,
        len: end - start + 1,
    }))
}

pub async fn get(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    digest: &str,
    req: Request,
) -> ApiResult {
    let d: Digest = digest.parse()?;
    let reg = &state.registry;
    let info = reg.stat_blob(name, &d).await?;
    let head = req.method() == Method::HEAD;
    if !head {
        if let Some(url) = reg.blob_redirect(&d, "GET").await? {
            state.notifier.blob_pulled(ctx, name, &d, info.size);
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
    let range = match header_str(&req, "range").map(|r| parse_range(r, info.size)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(())) => {
            let mut resp =
                Error::new(Code::RangeInvalid, "requested range not satisfiable").into_response();
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes */{}", info.size).parse().unwrap(),
            );
            return Ok(resp);
        }
    };
    let (status, start, len) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.len),
        None => (StatusCode::OK, 0, info.size),
    };
    let body = if head {
        Body::empty()
    } else {
        let stream = reg.read_blob(&d, start, Some(len)).await?;
        // A pull is a GET served (ranges included, as distribution counts them).
        state.notifier.blob_pulled(ctx, name, &d, info.size);
        Body::from_stream(stream)
    };
    let mut resp = (status, common, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    if range.is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Ok(Some(ByteRange { start: 0, len: 10 }))
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Ok(Some(ByteRange { start: 90, len: 10 }))
        );
        assert_eq!(
            parse_range("bytes=-5", 100),
            Ok(Some(ByteRange { start: 95, len: 5 }))
        );
        assert_eq!(
            parse_range("bytes=50-500", 100),
            Ok(Some(ByteRange { start: 50, len: 50 }))
        );
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
    }
}
