//! In-memory driver for tests and throwaway single-node use. Directories are
//! implied by the object paths beneath them, as in an object store.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{check_path, ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};

#[derive(Clone)]
struct Object {
    data: Bytes,
    modified: SystemTime,
}

type Objects = Arc<Mutex<BTreeMap<String, Object>>>;

#[derive(Default)]
pub struct InMemoryDriver {
    objects: Objects,
}

impl InMemoryDriver {
    pub fn new() -> Self {
        Self::default()
    }
}

fn dir_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    }
}

struct MemWriter {
    objects: Objects,
    path: String,
    buf: BytesMut,
}

#[async_trait]
impl FileWriter for MemWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    async fn close(self: Box<Self>) -> Result<u64> {
        self.commit().await
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        let size = self.buf.len() as u64;
        self.objects.lock().unwrap().insert(
            self.path,
            Object {
                data: self.buf.freeze(),
                modified: SystemTime::now(),
            },
        );
        Ok(size)
    }
}

#[async_trait]
impl StorageDriver for InMemoryDriver {
    fn name(&self) -> &'static str {
        "inmemory"
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        check_path(path)?;
        let objects = self.objects.lock().unwrap();
        objects
            .get(path)
            .map(|o| o.data.clone())
            .ok_or_else(|| StorageError::NotFound(path.to_string()))
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        check_path(path)?;
        self.objects.lock().unwrap().insert(
            path.to_string(),
            Object {
                data: content,
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let data = self.get_content(path).await?;
        let size = data.len() as u64;
        if offset > size {
            return Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
            });
        }
        let end = len.map_or(size, |l| (offset + l).min(size));
        let slice = data.slice(offset as usize..end as usize);
        Ok(futures::stream::once(async move { Ok(slice) }).boxed())
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        check_path(path)?;
        let existing = self
            .objects
            .lock()
            .unwrap()
            .get(path)
            .map(|o| o.data.clone())
            .unwrap_or_default();
        if offset > existing.len() as u64 {
            return Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
            });
        }
        let mut buf = BytesMut::from(&existing[..offset as usize]);
        buf.reserve(64 * 1024);
        Ok(Box::new(MemWriter {
            objects: self.objects.clone(),
            path: path.to_string(),
            buf,
        }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        check_path(path)?;
        let objects = self.objects.lock().unwrap();
        if let Some(o) = objects.get(path) {
            return Ok(FileInfo {
                path: path.to_string(),
                size: o.data.len() as u64,
                modified: o.modified,
                is_dir: false,
            });
        }
        let prefix = dir_prefix(path);
        let newest = objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, o)| o.modified)
            .max();
        match newest {
            Some(modified) => Ok(FileInfo {
                path: path.to_string(),
                size: 0,
                modified,
                is_dir: true,
            }),
            None => Err(StorageError::NotFound(path.to_string())),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        check_path(path)?;
        let prefix = dir_prefix(path);
        let objects = self.objects.lock().unwrap();
        let mut out: Vec<String> = Vec::new();
        for key in objects
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
        {
            let child = key[prefix.len()..].split('/').next().unwrap_or_default();
            let full = format!("{prefix}{child}");
            if out.last() != Some(&full) {
                out.push(full);
            }
        }
        if out.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(out)
    }

    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        check_path(source)?;
        check_path(dest)?;
        let mut objects = self.objects.lock().unwrap();
        let obj = objects
            .remove(source)
            .ok_or_else(|| StorageError::NotFound(source.to_string()))?;
        objects.insert(dest.to_string(), obj);
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        check_path(path)?;
        let prefix = dir_prefix(path);
        let mut objects = self.objects.lock().unwrap();
        let before = objects.len();
        objects.retain(|k, _| k != path && !k.starts_with(&prefix));
        if objects.len() == before {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(())
    }
}
