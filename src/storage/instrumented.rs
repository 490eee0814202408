//! A decorator timing every operation of the driver it wraps, into
//! `registry_storage_action_seconds{driver,action}` (distribution's
//! instrumented driver). Readers and writers are timed for opening only: the
//! bytes stream through untouched. A writer's `close` and `commit` are timed
//! too (`WriterClose`, `WriterCommit`), since a commit can be the slow part.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ByteStream, Driver, FileInfo, FileWriter, Result, StorageDriver};
use crate::telemetry::metrics::{Metrics, StorageAction, StorageTimers};

pub struct InstrumentedDriver {
    inner: Driver,
    timers: Arc<StorageTimers>,
}

impl InstrumentedDriver {
    /// `inner`, timed into `metrics` under its own name.
    pub fn wrap(inner: Driver, metrics: &Metrics) -> Driver {
        let timers = Arc::new(metrics.storage_timers(inner.name()));
        Arc::new(InstrumentedDriver { inner, timers })
    }
}

#[async_trait]
impl StorageDriver for InstrumentedDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let t = Instant::now();
        let r = self.inner.get_content(path).await;
        self.timers.observe(StorageAction::GetContent, t);
        r
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.put_content(path, content).await;
        self.timers.observe(StorageAction::PutContent, t);
        r
    }

    async fn put_scratch(&self, path: &str, content: Bytes) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.put_scratch(path, content).await;
        self.timers.observe(StorageAction::PutScratch, t);
        r
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let t = Instant::now();
        let r = self.inner.reader(path, offset, len).await;
        self.timers.observe(StorageAction::Reader, t);
        r
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        let t = Instant::now();
        let r = self.inner.writer(path, offset).await;
        self.timers.observe(StorageAction::Writer, t);
        Ok(Box::new(InstrumentedWriter {
            inner: r?,
            timers: self.timers.clone(),
        }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let t = Instant::now();
        let r = self.inner.stat(path).await;
        self.timers.observe(StorageAction::Stat, t);
        r
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list(path).await;
        self.timers.observe(StorageAction::List, t);
        r
    }

    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.rename(source, dest).await;
        self.timers.observe(StorageAction::Move, t);
        r
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.delete(path).await;
        self.timers.observe(StorageAction::Delete, t);
        r
    }

    async fn redirect_url(&self, path: &str, method: &str) -> Result<Option<String>> {
        let t = Instant::now();
        let r = self.inner.redirect_url(path, method).await;
        self.timers.observe(StorageAction::RedirectURL, t);
        r
    }
}

struct InstrumentedWriter {
    inner: Box<dyn FileWriter>,
    timers: Arc<StorageTimers>,
}

#[async_trait]
impl FileWriter for InstrumentedWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.inner.write(chunk).await
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn close(self: Box<Self>) -> Result<u64> {
        let t = Instant::now();
        let r = self.inner.close().await;
        self.timers.observe(StorageAction::WriterClose, t);
        r
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        let t = Instant::now();
        let r = self.inner.commit().await;
        self.timers.observe(StorageAction::WriterCommit, t);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::inmemory::InMemoryDriver;

    /// The decorator passes the shared driver suite, and counts what it did.
    #[tokio::test]
    async fn passes_the_suite_and_counts() {
        let metrics = Metrics::new();
        let driver = InstrumentedDriver::wrap(Arc::new(InMemoryDriver::new()), &metrics);
        assert_eq!(driver.name(), "inmemory");
        crate::storage::testsuite::run_all(driver.as_ref()).await;
        let text = metrics.render();
        for action in [
            "PutContent",
            "GetContent",
            "Reader",
            "Writer",
            "WriterCommit",
            "Stat",
        ] {
            let prefix = format!(
                "registry_storage_action_seconds_count{{action=\"{action}\",driver=\"inmemory\"}} "
            );
            let count: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {action} in:\n{text}"))
                .parse()
                .unwrap();
            assert!(count > 0, "{action}");
        }
    }
}
