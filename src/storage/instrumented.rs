//! A decorator around the configured driver for observability: every
//! operation is timed into `registry_storage_action_seconds{driver,action}`
//! (distribution's instrumented driver) when metrics are on, and runs inside
//! a `storage.<Action>` trace span when tracing is on. Readers and writers
//! are observed for opening only: the bytes stream through untouched. A
//! writer's `close` and `commit` are observed too (`WriterClose`,
//! `WriterCommit`), since a commit can be the slow part.

use std::{future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use super::{ByteStream, Driver, FileInfo, FileWriter, Result, StagedWriter, StorageDriver};
use crate::telemetry::{
    metrics::{Metrics, StorageAction, StorageTimers},
    otel,
};

#[derive(Clone)]
struct Observer {
    driver: &'static str,
    timers: Option<Arc<StorageTimers>>,
}

impl Observer {
    async fn run<T>(&self, action: StorageAction, path: &str, op: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let r = if otel::enabled() {
            op.instrument(otel::storage_span(self.driver, action.name(), path))
                .await
        } else {
            op.await
        };
        if let Some(t) = &self.timers {
            t.observe(action, started);
        }
        r
    }
}

pub struct InstrumentedDriver {
    inner: Driver,
    observer: Observer,
}

impl InstrumentedDriver {
    /// `inner`, timed into `metrics` (if any) under its own name and traced
    /// (if tracing is on); `inner` itself when neither is wanted.
    pub fn wrap(inner: Driver, metrics: Option<&Metrics>) -> Driver {
        if metrics.is_none() && !otel::enabled() {
            return inner;
        }
        let observer = Observer {
            driver: inner.name(),
            timers: metrics.map(|m| Arc::new(m.storage_timers(inner.name()))),
        };
        Arc::new(InstrumentedDriver { inner, observer })
    }
}

#[async_trait]
impl StorageDriver for InstrumentedDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let op = self.inner.get_content(path);
        self.observer.run(StorageAction::GetContent, path, op).await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let op = self.inner.put_content(path, content);
        self.observer.run(StorageAction::PutContent, path, op).await
    }

    async fn put_scratch(&self, path: &str, content: Bytes) -> Result<()> {
        let op = self.inner.put_scratch(path, content);
        self.observer.run(StorageAction::PutScratch, path, op).await
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let op = self.inner.reader(path, offset, len);
        self.observer.run(StorageAction::Reader, path, op).await
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        let op = self.inner.writer(path, offset);
        let inner = self.observer.run(StorageAction::Writer, path, op).await?;
        Ok(Box::new(InstrumentedWriter {
            inner,
            observer: self.observer.clone(),
            path: path.to_string(),
        }))
    }

    async fn resume_writer(&self, path: &str, offset: u64) -> Result<super::Resume> {
        let op = self.inner.resume_writer(path, offset);
        Ok(
            match self.observer.run(StorageAction::Writer, path, op).await? {
                super::Resume::Writer(inner) => {
                    super::Resume::Writer(Box::new(InstrumentedWriter {
                        inner,
                        observer: self.observer.clone(),
                        path: path.to_string(),
                    }))
                }
                elsewhere => elsewhere,
            },
        )
    }

    async fn fresh_writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        let op = self.inner.fresh_writer(path);
        let inner = self.observer.run(StorageAction::Writer, path, op).await?;
        Ok(Box::new(InstrumentedWriter {
            inner,
            observer: self.observer.clone(),
            path: path.to_string(),
        }))
    }

    /// Timed as opening a writer; its bytes and commit pass untouched.
    async fn staged_writer(&self, path: &str) -> Result<Option<Box<dyn StagedWriter>>> {
        let op = self.inner.staged_writer(path);
        self.observer.run(StorageAction::Writer, path, op).await
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let op = self.inner.stat(path);
        self.observer.run(StorageAction::Stat, path, op).await
    }

    async fn stat_object(&self, path: &str) -> Result<FileInfo> {
        let op = self.inner.stat_object(path);
        self.observer.run(StorageAction::Stat, path, op).await
    }

    /// Timed as a stat: it is one (or, on S3, one read of the upload state).
    async fn stored_size(&self, path: &str) -> Result<Option<u64>> {
        let op = self.inner.stored_size(path);
        self.observer.run(StorageAction::Stat, path, op).await
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let op = self.inner.list(path);
        self.observer.run(StorageAction::List, path, op).await
    }

    async fn list_page(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<super::ListPage> {
        let op = self.inner.list_page(path, after, limit);
        self.observer.run(StorageAction::List, path, op).await
    }

    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        let op = self.inner.rename(source, dest);
        self.observer.run(StorageAction::Move, source, op).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let op = self.inner.delete(path);
        self.observer.run(StorageAction::Delete, path, op).await
    }

    async fn delete_known(&self, dir: &str, names: &[&str]) -> Result<()> {
        let op = self.inner.delete_known(dir, names);
        self.observer.run(StorageAction::Delete, dir, op).await
    }

    async fn redirect_url(&self, path: &str, method: &str) -> Result<Option<String>> {
        let op = self.inner.redirect_url(path, method);
        self.observer
            .run(StorageAction::RedirectURL, path, op)
            .await
    }
}

struct InstrumentedWriter {
    inner: Box<dyn FileWriter>,
    observer: Observer,
    path: String,
}

impl InstrumentedWriter {
    /// Close or commit the inner writer, observed as `action`.
    async fn finish<T, F>(
        self: Box<Self>,
        action: StorageAction,
        op: impl FnOnce(Box<dyn FileWriter>) -> F,
    ) -> T
    where
        F: Future<Output = T>,
    {
        let InstrumentedWriter {
            inner,
            observer,
            path,
        } = *self;
        observer.run(action, &path, op(inner)).await
    }
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
        self.finish(StorageAction::WriterClose, |w| w.close()).await
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        self.finish(StorageAction::WriterCommit, |w| w.commit())
            .await
    }

    async fn commit_to(self: Box<Self>, dest: &str) -> Result<(u64, bool)> {
        self.finish(StorageAction::WriterCommit, |w| w.commit_to(dest))
            .await
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
        let driver = InstrumentedDriver::wrap(Arc::new(InMemoryDriver::new()), Some(&metrics));
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
