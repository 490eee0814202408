//! Blobs whose digest comes first (`PUT ?digest=` on a fresh upload,
//! `POST ?digest=`) on Azure (Azurite): blocks staged on the blob's own name,
//! and nothing visible after a wrong digest, a broken body or a dropped
//! client; a blob already there unchanged until the commit; two pushes of one
//! blob at once; Azure requests per push.

use std::{sync::Arc, time::Duration};

use berth::{
    registry::{digest::Digest, error::Code, Registry},
    storage::{azure::AzureDriver, budget::BufferBudget, layout, ByteStream, StorageDriver},
};
use bytes::Bytes;
use futures::StreamExt;

use crate::{
    common::{azurite::Azurite, http::sha256},
    s3::{data, error_code, with_digest, Client, MIB},
};

/// The registry in-process on an Azure driver, to look behind it.
struct Stack {
    _az: Azurite,
    d: Arc<AzureDriver>,
    budget: BufferBudget,
    registry: Registry,
    c: Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Stack {
    async fn start() -> Stack {
        let az = Azurite::start();
        let budget = BufferBudget::new(64 * MIB as u64, Duration::from_secs(30));
        let d = Arc::new(
            az.driver("direct", "")
                .await
                .with_buffer_budget(budget.clone()),
        );
        let cfg = berth::config::Config::from_yaml("http:\n  secret: s\n").unwrap();
        let registry = Registry::new(d.clone(), b"s", true);
        let app = berth::api::router(&cfg, registry.clone(), None, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Stack {
            _az: az,
            d,
            budget,
            registry,
            c: Client::new(format!("http://{addr}")),
            server,
        }
    }

    /// Every blob in the container (List Blobs: committed blobs only).
    async fn names(&self) -> Vec<String> {
        let mut dirs = vec!["/".to_string()];
        let mut names = Vec::new();
        while let Some(dir) = dirs.pop() {
            let Ok(children) = self.d.list(&dir).await else {
                continue;
            };
            for child in children {
                match self.d.stat_object(&child).await {
                    Ok(_) => names.push(child),
                    Err(_) => dirs.push(child),
                }
            }
        }
        names.sort();
        names
    }

    /// No writer holds buffer room any more.
    fn budget_free(&self) -> bool {
        self.budget.available() == self.budget.total()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn blob_path(digest: &str) -> String {
    layout::blob_data(&digest.parse::<Digest>().unwrap())
}

fn link_path(name: &str, digest: &str) -> String {
    layout::layer_link(name, &digest.parse::<Digest>().unwrap())
}

/// A wrong digest, on `PUT ?digest=` after POST and on `POST ?digest=`,
/// with a body of three blocks: 400 DIGEST_INVALID, and the container lists
/// nothing: no blob, no upload session. The blocks stay staged at the
/// claimed name, uncommitted, for Azure to discard.
#[tokio::test]
async fn azure_wrong_digest_leaves_nothing() {
    let st = Stack::start().await;
    let body = data(12 * MIB, 21);
    let claimed = sha256(b"something else");
    let loc = st.c.start_upload("app").await;
    let r =
        st.c.http
            .put(st.c.url(&with_digest(&loc, &claimed)))
            .body(body.clone())
            .send()
            .await
            .unwrap();
    assert_eq!(error_code(r).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(st.names().await, Vec::<String>::new());
    let at = blob_path(&claimed);
    assert!(st.d.stat_object(&at).await.unwrap_err().is_not_found());
    // Two at least; the third was in flight when the digest was checked.
    assert!(st.d.uncommitted_blocks(&at).await.unwrap() >= 2);

    let r =
        st.c.post(&format!("/v2/app/blobs/uploads/?digest={claimed}"), body)
            .await;
    assert_eq!(error_code(r).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(st.names().await, Vec::<String>::new());
    assert!(st.d.stat_object(&at).await.unwrap_err().is_not_found());
    assert!(st.budget_free());
}

/// 11 MiB (two blocks staged), then either a broken body or a body that
/// never ends, whose request is then dropped (a client gone mid-body: the
/// server drops its handler).
fn body_of_11_mib(then_fail: bool) -> (ByteStream, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let chunks = futures::stream::iter((0..11).map(|i| Ok(Bytes::from(data(MIB, 40 + i)))));
    let end = futures::stream::once(async move {
        let _ = tx.send(());
        if then_fail {
            Err(std::io::Error::other("connection reset"))
        } else {
            futures::future::pending().await
        }
    });
    (Box::pin(chunks.chain(end)), rx)
}

#[tokio::test]
async fn azure_broken_and_dropped_bodies_leave_nothing() {
    let st = Stack::start().await;
    let digest: Digest = sha256(b"never complete").parse().unwrap();
    let at = layout::blob_data(&digest);

    let (body, _) = body_of_11_mib(true);
    let e = st
        .registry
        .push_blob("app", &digest, body)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::BlobUploadInvalid);
    assert_eq!(st.names().await, Vec::<String>::new());
    assert!(
        st.budget_free(),
        "the block in flight stopped before answering"
    );

    // Its staged blocks stay, uncommitted, for Azure to discard.
    let before = st.d.uncommitted_blocks(&at).await.unwrap();
    assert!(before >= 1);
    let (body, reached) = body_of_11_mib(false);
    let registry = st.registry.clone();
    let d = digest.clone();
    let push = tokio::spawn(async move { registry.push_blob("app", &d, body).await });
    reached.await.unwrap();
    // The first block was sent before the second went (one in flight at most).
    assert!(st.d.uncommitted_blocks(&at).await.unwrap() > before);
    assert!(!st.budget_free());
    push.abort();
    assert!(push.await.unwrap_err().is_cancelled());
    st.d.settled().await;
    assert!(st.budget_free(), "no block left sending");
    assert_eq!(st.names().await, Vec::<String>::new());
    assert!(st.d.stat_object(&at).await.unwrap_err().is_not_found());
}

/// A staged writer over a blob already there: the blob reads as it was,
/// size and bytes, while blocks are staged on its name; the commit replaces
/// it whole.
#[tokio::test]
async fn azure_existing_blob_unchanged_until_commit() {
    let az = Azurite::start();
    let d = az.driver("existing", "").await;
    let p = "/docker/registry/v2/blobs/sha256/ab/abcd/data";
    let old = data(5 * MIB, 1);
    let mut w = d.staged_writer(p).await.unwrap().unwrap();
    w.write(Bytes::from(old.clone())).await.unwrap();
    w.commit().await.unwrap();

    let new = data(9 * MIB, 2);
    let mut w = d.staged_writer(p).await.unwrap().unwrap();
    for c in new.chunks(MIB) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
        assert_eq!(d.stat_object(p).await.unwrap().size, old.len() as u64);
    }
    assert!(d.uncommitted_blocks(p).await.unwrap() >= 1);
    assert!(
        d.get_content(p).await.unwrap() == old,
        "changed before commit"
    );
    assert_eq!(w.commit().await.unwrap(), new.len() as u64);
    assert!(d.get_content(p).await.unwrap() == new, "commit not whole");
    assert_eq!(d.uncommitted_blocks(p).await.unwrap(), 0);
}

/// Two writers of one name: the first commit discards the blocks the other
/// staged, whose commit then says `Conflict` (the blob is the first's); two
/// writers committing in turn without overlap each replace it whole.
#[tokio::test]
async fn azure_staged_writers_on_one_name() {
    let az = Azurite::start();
    let d = az.driver("race", "").await;
    let p = "/docker/registry/v2/blobs/sha256/cd/cdef/data";
    let body = data(9 * MIB, 3);
    let mut slow = d.staged_writer(p).await.unwrap().unwrap();
    slow.write(Bytes::copy_from_slice(&body[..5 * MIB]))
        .await
        .unwrap();
    let mut fast = d.staged_writer(p).await.unwrap().unwrap();
    fast.write(Bytes::from(body.clone())).await.unwrap();
    assert_eq!(fast.commit().await.unwrap(), body.len() as u64);
    slow.write(Bytes::copy_from_slice(&body[5 * MIB..]))
        .await
        .unwrap();
    let e = slow.commit().await.unwrap_err();
    assert!(
        matches!(e, berth::storage::StorageError::Conflict { .. }),
        "{e}"
    );
    assert!(d.get_content(p).await.unwrap() == body);
}

/// The body of `blob` in 1 MiB chunks, halting after `first` bytes until
/// `go` fires; `halted` fires when it got there.
fn gated(
    blob: &[u8],
    first: usize,
) -> (
    ByteStream,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (halted_tx, halted) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let chunk = |r: &[u8]| -> Vec<std::io::Result<Bytes>> {
        r.chunks(MIB)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    };
    let head = futures::stream::iter(chunk(&blob[..first]));
    let tail = chunk(&blob[first..]);
    let gate = futures::stream::once(async move {
        let _ = halted_tx.send(());
        let _ = go_rx.await;
        futures::stream::iter(tail)
    })
    .flatten();
    (Box::pin(head.chain(gate)), halted, go)
}

/// Two clients push one blob at once through the registry; the first to
/// commit discards the other's staged blocks, and that one, finding the
/// blob committed at its size, succeeds too. Afterwards: one blob, whole,
/// and its link.
#[tokio::test]
async fn azure_concurrent_pushes_of_one_blob_both_succeed() {
    let st = Stack::start().await;
    let blob = data(12 * MIB, 4);
    let hex = sha256(&blob);
    let digest: Digest = hex.parse().unwrap();
    let at = layout::blob_data(&digest);

    let (body, halted, go) = gated(&blob, 9 * MIB);
    let registry = st.registry.clone();
    let d = digest.clone();
    let slow = tokio::spawn(async move { registry.push_blob("app", &d, body).await });
    halted.await.unwrap();
    assert!(st.d.uncommitted_blocks(&at).await.unwrap() >= 1);
    let body: ByteStream = Box::pin(futures::stream::iter(
        blob.chunks(MIB)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ));
    let fast = st.registry.push_blob("app", &digest, body).await.unwrap();
    go.send(()).unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(
        (fast.size, slow.size),
        (blob.len() as u64, blob.len() as u64)
    );
    assert_eq!((&fast.digest, &slow.digest), (&digest, &digest));
    assert_eq!(st.names().await, [at.clone(), link_path("app", &hex)]);
    assert!(st.c.pull_blob("app", &hex).await.1 == blob);
    assert!(st.budget_free());
}

/// Azure requests per push, counted by the driver: the figures in the
/// README. Exact, so that a regression shows.
#[tokio::test]
async fn azure_requests_per_direct_push() {
    let st = Stack::start().await;
    let d = st.d.clone();
    let count = |r0: u64| d.requests() - r0;

    let tiny = b"ab".to_vec();
    let r0 = d.requests();
    let r =
        st.c.post(
            &format!("/v2/app/blobs/uploads/?digest={}", sha256(&tiny)),
            tiny,
        )
        .await;
    assert_eq!(r.status(), 201);
    let small_post = count(r0);
    let r0 = d.requests();
    st.c.push_blob("app", b"{}", &[]).await;
    let small_put = count(r0);
    let r0 = d.requests();
    let big = data(12 * MIB, 51);
    let digest = st.c.push_blob("app", &big, &[]).await;
    let big_put = count(r0);
    eprintln!(
        "Azure requests: 2-byte POST ?digest= {small_post}, 2-byte POST+PUT {small_put}, \
         12 MiB POST+PUT {big_put}"
    );
    assert!(st.c.pull_blob("app", &digest).await.1 == big);
    // Put Blob of the blob, link Put Blob (through `_uploads`: 12).
    assert_eq!(small_post, 2);
    // POST: startedat Put Blob. PUT: upload data Get Properties and List
    // Blobs (nothing stored), startedat Get Properties, Put Blob of the
    // blob, link Put Blob, the session's Delete Blob (404), List Blobs and
    // startedat Delete Blob (through `_uploads`: 15).
    assert_eq!(small_put, 9);
    // As 2 bytes, with 3 Put Block and a Put Block List for the Put Blob
    // (through `_uploads`: 17, a Copy Blob among them).
    assert_eq!(big_put, 12);
}

/// Through HTTP: a `PUT ?digest=` whose client goes away after 11 MiB of 12
/// (blocks staged) leaves no blob and no upload data, and no block sending;
/// the session stays (its `startedat`), for the client to try again.
#[tokio::test]
async fn azure_dropped_client_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let st = Stack::start().await;
    let loc = url::Url::parse(&st.c.url(&st.c.start_upload("app").await)).unwrap();
    let id = loc.path().rsplit('/').next().unwrap().to_string();
    let claimed = sha256(b"never sent whole");
    let target = format!("{}?{}&digest={claimed}", loc.path(), loc.query().unwrap());
    let addr = format!("{}:{}", loc.host_str().unwrap(), loc.port().unwrap());
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        12 * MIB
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data(11 * MIB, 71)).await.unwrap();
    let at = blob_path(&claimed);
    until("a block to be staged", || async {
        st.d.uncommitted_blocks(&at).await.unwrap() > 0
    })
    .await;
    drop(conn);
    until("the writer to let go of its buffers", || async {
        st.budget_free()
    })
    .await;
    st.d.settled().await;
    let started = format!("/docker/registry/v2/repositories/app/_uploads/{id}/startedat");
    assert_eq!(st.names().await, [started]);
}

/// Polls `cond` (an observable state) until it holds, at most 20 s: what a
/// dropped connection sets off on the server is not awaitable.
async fn until<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}
