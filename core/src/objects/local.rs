//! Objects as files under a directory; download links are HMAC-signed URLs served by the API.
use super::ObjectStore;
use crate::signing::LinkSigner;
use crate::{CoreError, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

pub struct LocalObjectStore {
    root: PathBuf,
    /// Base of the links handed to clients, e.g. `http://localhost:8080`.
    public_url: String,
    signer: LinkSigner,
}

/// The bucket name the embedded store reports in job results.
pub const LOCAL_BUCKET: &str = "local";

impl LocalObjectStore {
    pub fn new(root: impl Into<PathBuf>, public_url: &str, signer: LinkSigner) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalObjectStore {
            root,
            public_url: public_url.trim_end_matches('/').to_owned(),
            signer,
        })
    }

    pub fn signer(&self) -> &LinkSigner {
        &self.signer
    }

    /// The file behind a key. Keys are relative paths of plain components only: anything that
    /// could escape the root (`..`, absolute paths) is refused.
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        let plain = !key.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(CoreError::InvalidKey(key.to_owned()));
        }
        Ok(self.root.join(relative))
    }

    /// Write through a temporary file in the same directory and rename: readers never see a
    /// half-written object.
    async fn write_atomically(&self, key: &str, write: impl AsyncFnOnce(&Path) -> Result<()>) -> Result<()> {
        let path = self.path_of(key)?;
        let dir = path
            .parent()
            .ok_or_else(|| CoreError::InvalidKey(key.to_owned()))?;
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!(".tmp-{}", Uuid::new_v4().simple()));
        let written = write(&tmp).await;
        let renamed = match written {
            Ok(()) => tokio::fs::rename(&tmp, &path).await.map_err(CoreError::from),
            Err(e) => Err(e),
        };
        if renamed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        renamed
    }
}

/// Whether an I/O error on `path` means "there is no object there": nothing at all, a directory
/// (the prefix of other keys), or a file in place of one of the path's directories.
async fn not_an_object(e: &std::io::Error, path: &Path) -> bool {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => true,
        _ => tokio::fs::metadata(path)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false),
    }
}

#[async_trait]
impl ObjectStore for LocalObjectStore {
    async fn put_file(&self, key: &str, path: &Path, _content_type: &str) -> Result<()> {
        self.write_atomically(key, async |tmp: &Path| {
            tokio::fs::copy(path, tmp).await?;
            Ok(())
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<()> {
        self.write_atomically(key, async |tmp: &Path| {
            tokio::fs::write(tmp, &bytes).await?;
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if not_an_object(&e, &path).await => Err(CoreError::ObjectNotFound(key.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_prefix(&self, key: &str, max_len: u64) -> Result<super::Prefix> {
        use tokio::io::AsyncReadExt;
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if not_an_object(&e, &path).await => {
                return Err(CoreError::ObjectNotFound(key.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(CoreError::ObjectNotFound(key.to_owned()));
        }
        let total_size = meta.len();
        let mut bytes = Vec::with_capacity(max_len.min(total_size) as usize);
        file.take(max_len).read_to_end(&mut bytes).await?;
        Ok(super::Prefix {
            bytes: Bytes::from(bytes),
            total_size,
        })
    }

    /// The files directly in the prefix's directory (the key layout keeps no deeper levels),
    /// skipping in-progress writes (`.tmp-*`). Reads the directory once per page: fine for the
    /// embedded default, which is one machine's disk.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<super::ObjectEntry>> {
        let dir = self.path_of(prefix.trim_end_matches('/'))?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let key = format!("{}/{name}", prefix.trim_end_matches('/'));
            if name.starts_with(".tmp-") || after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let meta = entry.metadata().await?;
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().map(chrono::DateTime::<chrono::Utc>::from)?;
            found.push(super::ObjectEntry {
                key,
                bytes: meta.len(),
                modified,
            });
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if not_an_object(&e, &path).await => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Only files are objects: the directory of `a/b` is not an object `a`.
    async fn exists(&self, key: &str) -> Result<bool> {
        match tokio::fs::metadata(self.path_of(key)?).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            // A file where a directory of the key's path would be (`a` when asked for `a/b`).
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        self.path_of(key)?;
        let expires = chrono::Utc::now().timestamp() + expires_in.as_secs() as i64;
        let signature = self.signer.sign(key, expires);
        Ok(format!(
            "{}/files/{key}?expires={expires}&signature={signature}",
            self.public_url
        ))
    }

    fn bucket(&self) -> &str {
        LOCAL_BUCKET
    }

    fn endpoint_url(&self) -> &str {
        &self.public_url
    }

    async fn ping(&self) -> Result<()> {
        let meta = tokio::fs::metadata(&self.root).await?;
        if !meta.is_dir() {
            return Err(CoreError::Config(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> LocalObjectStore {
        LocalObjectStore::new(dir, "http://localhost:8080/", LinkSigner::new(vec![7; 32])).unwrap()
    }

    #[tokio::test]
    async fn round_trips_and_refuses_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .put_bytes("images/thumbnail/a.png", Bytes::from_static(b"abc"), "image/png")
            .await
            .unwrap();
        assert_eq!(
            store.get("images/thumbnail/a.png").await.unwrap(),
            Bytes::from_static(b"abc")
        );
        assert!(store.exists("images/thumbnail/a.png").await.unwrap());
        store.delete("images/thumbnail/a.png").await.unwrap();
        store.delete("images/thumbnail/a.png").await.unwrap();
        assert!(matches!(
            store.get("images/thumbnail/a.png").await,
            Err(CoreError::ObjectNotFound(_))
        ));
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", ""] {
            assert!(
                matches!(store.path_of(bad), Err(CoreError::InvalidKey(_))),
                "{bad}"
            );
        }
        let url = store
            .presign_get("images/x.png", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            url.starts_with("http://localhost:8080/files/images/x.png?expires="),
            "{url}"
        );
    }
}
