//! Local filesystem driver: `<rootdirectory>/<path>`, byte-compatible with
//! distribution's filesystem driver.
//!
//! Durability: a committed writer, `put_content` and `rename` fsync the file and
//! every directory entry they create before returning, so a 201 survives a crash.

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::{
    fs,
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
};
use tokio_util::io::ReaderStream;

use super::{check_path, ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};

/// Temporary files for atomic writes carry this prefix and are never listed.
const TMP_PREFIX: &str = ".berth-tmp-";
const READ_CHUNK: usize = 256 * 1024;

pub struct FilesystemDriver {
    root: PathBuf,
}

impl FilesystemDriver {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        check_path(path)?;
        Ok(self.root.join(path.trim_start_matches('/')))
    }
}

fn not_found(path: &str, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(path.to_string())
    } else {
        StorageError::Io(e)
    }
}

/// fsync a directory so that entries created in it are durable.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

/// Create `dir` and any missing parents, fsyncing the parent of each directory
/// created so the new entries survive a crash.
async fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    if fs::metadata(dir).await.is_ok() {
        return Ok(());
    }
    let mut missing = vec![dir.to_path_buf()];
    let mut cur = dir.parent();
    while let Some(p) = cur {
        if fs::metadata(p).await.is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    fs::create_dir_all(dir).await?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            sync_dir(parent).await?;
        }
    }
    Ok(())
}

struct FsWriter {
    file: fs::File,
    size: u64,
}

#[async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.file.write_all(&chunk).await?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(self.size)
    }
}

#[async_trait]
impl StorageDriver for FilesystemDriver {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let full = self.full(path)?;
        match fs::read(&full).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                Err(StorageError::NotFound(path.to_string()))
            }
            Err(e) => Err(not_found(path, e)),
        }
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let full = self.full(path)?;
        let dir = full.parent().expect("checked path has a parent");
        create_dirs_durably(dir).await?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let result = async {
            let mut f = fs::File::create(&tmp).await?;
            f.write_all(&content).await?;
            f.sync_all().await?;
            fs::rename(&tmp, &full).await?;
            sync_dir(dir).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        Ok(result?)
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let full = self.full(path)?;
        let mut f = fs::File::open(&full)
            .await
            .map_err(|e| not_found(path, e))?;
        let size = f.metadata().await?.len();
        if offset > size {
            return Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
            });
        }
        f.seek(SeekFrom::Start(offset)).await?;
        let len = len.unwrap_or(size - offset).min(size - offset);
        Ok(ReaderStream::with_capacity(f.take(len), READ_CHUNK).boxed())
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        let full = self.full(path)?;
        create_dirs_durably(full.parent().expect("checked path has a parent")).await?;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&full)
            .await?;
        let size = file.metadata().await?.len();
        if offset > size {
            return Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
            });
        }
        if size > offset {
            file.set_len(offset).await?;
        }
        file.seek(SeekFrom::Start(offset)).await?;
        Ok(Box::new(FsWriter { file, size: offset }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let full = self.full(path)?;
        let md = fs::metadata(&full).await.map_err(|e| not_found(path, e))?;
        Ok(FileInfo {
            path: path.to_string(),
            size: if md.is_dir() { 0 } else { md.len() },
            modified: md.modified()?,
            is_dir: md.is_dir(),
        })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let full = self.full(path)?;
        let mut rd = fs::read_dir(&full).await.map_err(|e| not_found(path, e))?;
        let prefix = path.trim_end_matches('/');
        let mut out = Vec::new();
        while let Some(entry) = rd.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TMP_PREFIX) {
                out.push(format!("{prefix}/{name}"));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        let from = self.full(source)?;
        let to = self.full(dest)?;
        fs::metadata(&from)
            .await
            .map_err(|e| not_found(source, e))?;
        let dir = to.parent().expect("checked path has a parent");
        create_dirs_durably(dir).await?;
        fs::rename(&from, &to).await?;
        sync_dir(dir).await?;
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path)?;
        let md = fs::symlink_metadata(&full)
            .await
            .map_err(|e| not_found(path, e))?;
        if md.is_dir() {
            fs::remove_dir_all(&full)
                .await
                .map_err(|e| not_found(path, e))
        } else {
            fs::remove_file(&full).await.map_err(|e| not_found(path, e))
        }
    }
}
