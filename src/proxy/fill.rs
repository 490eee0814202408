//! Fetching one blob from upstream into storage while clients already read
//! it: the fetch runs on a task of its own and writes each piece twice,
//! to the registry's digest-verified direct write (what ends up in the
//! cache) and to a spool file on local disk that every client pulling the
//! blob meanwhile reads behind it. So the first pull of a large layer
//! streams at once (zot's on-demand sync fetched whole images first and
//! timed clients out), memory stays flat whatever the layer size or the
//! clients' speed, N clients cause one upstream GET, and a client that
//! goes away stops nothing.
//!
//! A reader never gets the blob's last byte before the fetch verified the
//! digest: with wrong bytes from upstream, every reader's body breaks off
//! short (the client sees an incomplete download and retries) and nothing
//! enters the cache.

use std::{io, path::PathBuf, sync::Arc};

use bytes::Bytes;
use futures::StreamExt;
use std::io::Write;
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::{mpsc, watch},
};

use crate::{
    digest::Digest,
    registry::{
        blobs::BlobInfo,
        error::{Code, Error, Result},
        Registry,
    },
    storage::ByteStream,
};

/// What a reader reads at most at once from the spool.
const READ_PIECE: usize = 256 * 1024;
/// Pieces of the upstream's body spooled in one write at most.
const SPOOL_BATCH: usize = 64;
/// Pieces on their way to the storage write; a slow store slows the fetch
/// (and its readers) rather than filling memory.
const STORE_QUEUE: usize = 4;

/// How far a fetch got.
#[derive(Clone, Default)]
pub struct Progress {
    /// The blob's size, once the upstream said it.
    pub size: Option<u64>,
    /// Bytes in the spool.
    pub written: u64,
    /// Set when the fetch ended: stored and verified, or why not.
    pub outcome: Option<std::result::Result<BlobInfo, Error>>,
}

/// One blob being fetched; readers hold it (and so its spool) while they
/// read.
pub struct Fill {
    spool: Spool,
    progress: watch::Receiver<Progress>,
}

/// The spool file, removed when the last holder lets go.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Fill {
    /// Start fetching (`fetch`: the upstream's body and length) into `reg`
    /// as blob `d` of `name`, spooled under `dir`; `done` runs when the
    /// fetch ended, whichever way.
    pub fn start(
        reg: Registry,
        name: String,
        d: Digest,
        dir: &std::path::Path,
        fetch: impl std::future::Future<Output = Result<(ByteStream, Option<u64>)>> + Send + 'static,
        done: impl FnOnce() + Send + 'static,
    ) -> Result<Arc<Fill>> {
        let path = dir.join(format!(
            "berth-proxy-{}-{}",
            d.hex(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&path).map_err(|e| {
            tracing::error!(
                "proxy: cannot create a spool file in {}: {e}",
                dir.display()
            );
            Error::new(Code::Unavailable, "cannot spool a blob from upstream")
                .with_retry_after(std::time::Duration::from_secs(5))
        })?;
        let (tx, rx) = watch::channel(Progress::default());
        let fill = Arc::new(Fill {
            spool: Spool(path),
            progress: rx,
        });
        // The task holds the fill too, so the spool outlives it.
        let held = fill.clone();
        tokio::spawn(async move {
            let outcome = run(reg, name, d, file, &tx, fetch).await;
            tx.send_modify(|p| p.outcome = Some(outcome));
            done();
            drop(held);
        });
        Ok(fill)
    }

    /// The blob's size once the upstream said it, or the fetch's failure
    /// (with no size from upstream: once the fetch is over).
    pub async fn size(&self) -> Result<u64> {
        let mut rx = self.progress.clone();
        let p = rx
            .wait_for(|p| p.size.is_some() || p.outcome.is_some())
            .await
            .map_err(|_| gone())?
            .clone();
        match (p.outcome, p.size) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(size)) => Ok(size),
            (Some(Ok(info)), None) => Ok(info.size),
            (None, None) => Err(gone()),
        }
    }

    /// `[offset, offset + len)` of the blob, read from the spool as the
    /// fetch writes it.
    pub async fn reader(self: &Arc<Self>, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let file = tokio::fs::File::open(&self.spool.0)
            .await
            .map_err(|e| Error::new(Code::Unavailable, format!("spool: {e}")))?;
        let state = Reader {
            fill: self.clone(),
            rx: self.progress.clone(),
            file,
            pos: offset,
            end: len.map(|l| offset.saturating_add(l)),
            seeked: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, Reader::next)))
    }
}

struct Reader {
    /// Keeps the spool while this reader reads.
    #[allow(dead_code)]
    fill: Arc<Fill>,
    rx: watch::Receiver<Progress>,
    file: tokio::fs::File,
    pos: u64,
    end: Option<u64>,
    seeked: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Reader)> {
        loop {
            let p = self.rx.borrow_and_update().clone();
            let size = p.size.unwrap_or(u64::MAX);
            let end = self.end.unwrap_or(size).min(size);
            if self.pos >= end {
                return None;
            }
            // The last byte waits for the verdict on the digest.
            let readable = match &p.outcome {
                Some(Ok(_)) => p.written,
                Some(Err(e)) => {
                    let e = io::Error::new(io::ErrorKind::ConnectionAborted, e.message.clone());
                    return Some((Err(e), self.finished()));
                }
                None => p.written.min(size.saturating_sub(1)),
            };
            let upto = readable.min(end);
            if self.pos < upto {
                return Some(match self.read(upto).await {
                    Ok(b) => (Ok(b), self),
                    Err(e) => (Err(e), self.finished()),
                });
            }
            if self.rx.changed().await.is_err() && self.rx.borrow().outcome.is_none() {
                let e = io::Error::new(io::ErrorKind::ConnectionAborted, "blob fetch ended");
                return Some((Err(e), self.finished()));
            }
        }
    }

    async fn read(&mut self, upto: u64) -> io::Result<Bytes> {
        if !self.seeked {
            self.file.seek(io::SeekFrom::Start(self.pos)).await?;
            self.seeked = true;
        }
        let want = (upto - self.pos).min(READ_PIECE as u64) as usize;
        let mut buf = vec![0; want];
        self.file.read_exact(&mut buf).await?;
        self.pos += want as u64;
        Ok(Bytes::from(buf))
    }

    /// A reader that returns nothing more.
    fn finished(mut self) -> Reader {
        self.end = Some(self.pos);
        self
    }
}

fn gone() -> Error {
    Error::new(Code::Unavailable, "the blob's fetch from upstream ended")
        .with_retry_after(std::time::Duration::from_secs(5))
}

/// The fetch: upstream → spool and storage, verified by the storage write.
async fn run(
    reg: Registry,
    name: String,
    d: Digest,
    spool: std::fs::File,
    tx: &watch::Sender<Progress>,
    fetch: impl std::future::Future<Output = Result<(ByteStream, Option<u64>)>>,
) -> std::result::Result<BlobInfo, Error> {
    let (body, size) = fetch.await?;
    tx.send_modify(|p| p.size = size);
    let (pieces, queue) = mpsc::channel::<io::Result<Bytes>>(STORE_QUEUE);
    let queue = futures::stream::unfold(queue, |mut q| async move {
        q.recv().await.map(|item| (item, q))
    });
    let store = reg.push_blob(&name, &d, Box::pin(queue));
    let spooling = d.clone();
    let feed = async move {
        // What has arrived, spooled in one blocking write per batch: a
        // write and a flush per piece made a cold pull spool-bound.
        let mut batches = body.ready_chunks(SPOOL_BATCH);
        let mut spool = Some(spool);
        while let Some(batch) = batches.next().await {
            let mut ok = Vec::with_capacity(batch.len());
            let mut broke = None;
            for piece in batch {
                match piece {
                    Ok(p) => ok.push(p),
                    Err(e) => {
                        broke = Some(e);
                        break;
                    }
                }
            }
            let file = spool
                .take()
                .expect("the spool is put back after each batch");
            let pieces_out = ok.clone();
            let written = tokio::task::spawn_blocking(move || {
                let mut file = file;
                for p in &pieces_out {
                    file.write_all(p)?;
                }
                Ok::<_, io::Error>(file)
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            match written {
                Ok(file) => spool = Some(file),
                Err(e) => {
                    tracing::warn!("proxy: spooling {spooling}: {e}");
                    let _ = pieces
                        .send(Err(io::Error::other(format!("spool: {e}"))))
                        .await;
                    return;
                }
            }
            let n: u64 = ok.iter().map(|p| p.len() as u64).sum();
            tx.send_modify(|p| p.written += n);
            for piece in ok {
                if pieces.send(Ok(piece)).await.is_err() {
                    return; // the storage write ended (and says why)
                }
            }
            if let Some(e) = broke {
                let _ = pieces.send(Err(e)).await;
                return;
            }
        }
    };
    let (stored, ()) = futures::join!(store, feed);
    stored
}
