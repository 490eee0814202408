//! Storage drivers: they move bytes at paths and know nothing about registries.
//!
//! Like CNCF distribution's `storagedriver.StorageDriver`, a driver deals in
//! slash-separated absolute paths (`/docker/registry/v2/...`). The mapping from
//! repositories and digests to paths lives in [`layout`], in one place.
//! Every driver must pass the shared suite in [`testsuite`].

pub mod azure;
pub mod budget;
pub mod filesystem;
pub mod inmemory;
pub mod instrumented;
pub mod layout;
pub mod listing;
pub mod readahead;
pub mod s3;
pub mod testsuite;

use std::{
    io,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use listing::ListPage;

/// A stream of byte chunks, as read from or written to a driver.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a driver knows about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub modified: SystemTime,
    pub is_dir: bool,
}

/// Driver failures. `NotFound` is the one callers routinely branch on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path not found: {0}")]
    NotFound(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("invalid offset {offset} for {path}")]
    InvalidOffset { path: String, offset: u64 },
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The backend did not answer in time, throttled us, or is down: the same
    /// call may well succeed shortly.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The replica's upload buffer budget ([`budget`]) stayed spent for the
    /// configured wait; nothing was written.
    #[error("upload buffers are all in use; retry in {retry_after:?}")]
    Busy { retry_after: Duration },
    /// Another writer changed the object after this one opened it (two
    /// requests writing one upload at once); nothing of this writer's is kept.
    #[error("{path} was changed by another writer")]
    Conflict { path: String },
    /// The object cannot grow this far on the backend (S3's 10,000 parts);
    /// what was stored before this writer opened is kept.
    #[error("{path}: {reason}")]
    TooLarge { path: String, reason: String },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }

    /// Worth a retry by the client: a backend that is unavailable, or an I/O
    /// error that says "not now" (a timeout, a connection that broke).
    pub fn is_transient(&self) -> bool {
        use io::ErrorKind::*;
        match self {
            StorageError::Unavailable(_) => true,
            StorageError::Io(e) => matches!(
                e.kind(),
                TimedOut
                    | Interrupted
                    | WouldBlock
                    | ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | HostUnreachable
                    | NetworkUnreachable
                    | NetworkDown
                    | ResourceBusy
            ),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A writer that appends to the object at a path. Nothing written through it is
/// guaranteed visible as a whole object, or durable, until `commit` returns.
#[async_trait]
pub trait FileWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Bytes in the object so far, including what existed before this writer.
    fn size(&self) -> u64;
    /// Stop for now, keeping what was written: a later `writer(path, size)` —
    /// on any replica — continues it (an upload's PATCH). Returns the size.
    async fn close(self: Box<Self>) -> Result<u64>;
    /// Finish the object: durable, and readable as one object at its path
    /// (an upload's final PUT). Returns the size.
    async fn commit(self: Box<Self>) -> Result<u64>;
    /// Finish the object at `dest` instead, when the driver can put it
    /// there without a copy (S3: bytes that never left the writer's buffer
    /// go up in one PutObject at `dest`, rather than a PutObject here and a
    /// CopyObject there). Returns the size and whether the object is at
    /// `dest`; `false`: it was committed at the writer's own path, as by
    /// `commit`, and the caller moves it. `dest` is replaced whole, as by
    /// `rename`; the writer's path is left with nothing of it.
    async fn commit_to(self: Box<Self>, dest: &str) -> Result<(u64, bool)> {
        let _ = dest;
        Ok((self.commit().await?, false))
    }
}

/// A writer of one new whole object, straight at its final path, that
/// nobody sees until `commit` (an S3 multipart upload on the blob's key,
/// Azure blocks staged on the blob's name): the caller verifies what it
/// wrote before it decides. Dropped without `commit` or `abort` (a request
/// cancelled mid-body), it leaves nothing visible either: the driver
/// discards it in the background (S3), or the backend does (Azure drops
/// uncommitted blocks).
#[async_trait]
pub trait StagedWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Bytes written so far.
    fn size(&self) -> u64;
    /// Make the object visible at its path, whole and durable, replacing any
    /// object there. Returns the size. `Conflict` when another writer's
    /// commit at the same path discarded what this one had staged (Azure):
    /// the object there is that writer's, and nothing of this one's is.
    async fn commit(self: Box<Self>) -> Result<u64>;
    /// Discard everything written: nothing of it is visible, and nothing of
    /// it is left running; what stays on the backend (Azure's uncommitted
    /// blocks) the backend discards.
    async fn abort(self: Box<Self>);
}

/// What [`StorageDriver::resume_writer`] found.
pub enum Resume {
    /// A writer at the offset the caller expected.
    Writer(Box<dyn FileWriter>),
    /// The unfinished object stands elsewhere: at this size, as
    /// `stored_size` would say, or (`None`) nowhere. Nothing was touched.
    Elsewhere(Option<u64>),
}

/// The one interface every storage backend implements.
#[async_trait]
pub trait StorageDriver: Send + Sync + 'static {
    /// Short name for logs and metrics ("filesystem", "inmemory", ...).
    fn name(&self) -> &'static str;

    /// Read a whole small object (links, manifests).
    async fn get_content(&self, path: &str) -> Result<Bytes>;

    /// Write a whole small object atomically and durably: a reader sees either
    /// the previous content or the new one, never a part.
    async fn put_content(&self, path: &str, content: Bytes) -> Result<()>;

    /// Write a small object that need not survive a crash (the state of an
    /// upload in progress). Drivers where durability costs extra (fsync) may
    /// skip it; by default this is `put_content`.
    async fn put_scratch(&self, path: &str, content: Bytes) -> Result<()> {
        self.put_content(path, content).await
    }

    /// Stream `len` bytes (or to the end) starting at `offset`.
    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream>;

    /// A writer positioned at `offset` of the object at `path`. Data past
    /// `offset` (from an interrupted earlier write) is discarded, so a retried
    /// chunk overwrites rather than duplicates. `offset` beyond the current size
    /// is an `InvalidOffset` error.
    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>>;

    async fn stat(&self, path: &str) -> Result<FileInfo>;

    /// `stat` of a path the caller knows is no directory (a blob's data, a
    /// link, an upload's start marker): `NotFound` when no object is there,
    /// a directory included. One request on object stores, where `stat` of a
    /// missing path also lists to look for a directory. By default `stat`.
    async fn stat_object(&self, path: &str) -> Result<FileInfo> {
        match self.stat(path).await? {
            info if info.is_dir => Err(StorageError::NotFound(path.to_string())),
            info => Ok(info),
        }
    }

    /// A writer continuing the unfinished object at `path` exactly where the
    /// last `close` left it, which the caller expects at `offset` (an
    /// upload's next chunk); when it is elsewhere, where. By default
    /// `stored_size` then `writer`; a driver whose size and resumption come
    /// from one read (S3's upload state) makes it that one read.
    async fn resume_writer(&self, path: &str, offset: u64) -> Result<Resume> {
        match self.stored_size(path).await? {
            Some(size) if size == offset => Ok(Resume::Writer(self.writer(path, offset).await?)),
            other => Ok(Resume::Elsewhere(other)),
        }
    }

    /// `writer(path, 0)` where the caller has just seen that nothing is
    /// stored (`stored_size` was `None`: an upload's first chunk). A driver
    /// may skip looking for an unfinished object again (S3's upload state
    /// read). By default `writer(path, 0)`.
    async fn fresh_writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        self.writer(path, 0).await
    }

    /// A [`StagedWriter`] of a new object at `path`, for drivers where writing
    /// in place saves the copy of a later `rename` (object stores). `None` by
    /// default: the caller writes elsewhere and renames.
    async fn staged_writer(&self, _path: &str) -> Result<Option<Box<dyn StagedWriter>>> {
        Ok(None)
    }

    /// The size a `writer(path, size)` would continue from: what the last
    /// `close` of a writer at `path` kept; `None` when nothing is there. One
    /// request. By default the object's `stat`, right for drivers whose
    /// unfinished objects live at their path; a driver that keeps them
    /// elsewhere (S3's upload state) answers from there, and may answer
    /// `None` for an object already committed.
    async fn stored_size(&self, path: &str) -> Result<Option<u64>> {
        match self.stat(path).await {
            Ok(info) if !info.is_dir => Ok(Some(info.size)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the direct children of a directory, as full paths, sorted.
    async fn list(&self, path: &str) -> Result<Vec<String>>;

    /// At most `limit` names (not paths) of direct children of a directory,
    /// in order, after the name `after`: one page of a listing that may be
    /// too long to hold (a repository's tags). `NotFound` as `list` when the
    /// directory does not exist. This default lists everything and keeps one
    /// page; drivers that can list from a point in bounded memory override it.
    async fn list_page(&self, path: &str, after: Option<&str>, limit: usize) -> Result<ListPage> {
        let mut page = listing::PageCollector::new(after, limit);
        for child in self.list(path).await? {
            page.offer(child.rsplit('/').next().unwrap_or_default());
        }
        Ok(page.finish())
    }

    /// Atomically move an object, replacing any object at `dest`; durable on return.
    async fn rename(&self, source: &str, dest: &str) -> Result<()>;

    /// Delete an object or a whole directory tree.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Delete the directory `dir`, which the caller knows holds at most the
    /// objects `names` (whole objects, not unfinished writers' ones: a
    /// finished upload's start marker and data). A missing one is no error.
    /// By default `delete(dir)`; a driver where that costs a listing (S3)
    /// deletes just the named objects.
    async fn delete_known(&self, dir: &str, names: &[&str]) -> Result<()> {
        let _ = names;
        match self.delete(dir).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// A URL the client may fetch the object from directly, if the backend offers one.
    async fn redirect_url(&self, _path: &str, _method: &str) -> Result<Option<String>> {
        Ok(None)
    }
}

pub type Driver = Arc<dyn StorageDriver>;

/// Paths are absolute, slash-separated, and never contain `.`/`..` segments or
/// empty segments. Drivers call this before touching the backend.
pub fn check_path(path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && (path == "/"
            || path[1..]
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidPath(path.to_string()))
    }
}
