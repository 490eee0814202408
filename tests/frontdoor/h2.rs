//! Just enough HTTP/2 to see how a server ends an idle connection: the
//! client preface, one GET, acknowledgements for SETTINGS and PING, and a
//! record of the frames that came back until the server closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block (HPACK) for `GET path`: the static table's `:method GET`
/// and `:scheme`, then `:path` and `:authority` as literals.
fn get_block(scheme_https: bool, path: &str, authority: &str) -> Vec<u8> {
    let mut b = vec![0x82, if scheme_https { 0x87 } else { 0x86 }];
    for (index, value) in [(0x04u8, path), (0x01u8, authority)] {
        // Literal without indexing, name from the static table.
        b.push(index);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// What came back on the connection.
pub struct Seen {
    /// Frame types in the order received.
    pub frames: Vec<u8>,
    /// Whether the server closed the connection within the limit.
    pub closed: bool,
}

/// Send one GET on stream 1, then read (and acknowledge what needs it)
/// until the server closes the connection or `limit` passes.
pub async fn get_then_idle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    https: bool,
    authority: &str,
    limit: Duration,
) -> Seen {
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    // END_STREAM | END_HEADERS
    hello.extend(frame(HEADERS, 0x5, 1, &get_block(https, "/v2/", authority)));
    s.write_all(&hello).await.unwrap();
    let mut frames = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return;
            }
            frames.push(kind);
            let reply = match (kind, flags & ACK) {
                (SETTINGS, 0) => Some(frame(SETTINGS, ACK, 0, &[])),
                (PING, 0) => Some(frame(PING, ACK, 0, &payload)),
                _ => None,
            };
            if let Some(reply) = reply {
                // The server may already be gone: the read says so next.
                let _ = s.write_all(&reply).await;
            }
        }
    })
    .await
    .is_ok();
    Seen { frames, closed }
}
