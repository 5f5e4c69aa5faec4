//! Signed, expiring download links for the embedded default (the S3 store presigns instead).
//!
//! A link is `{base}/files/{key}?expires={unix seconds}&signature={hex HMAC-SHA256}`, where the
//! MAC covers the object key and the expiry. The key is configured, or generated once and kept
//! in the data directory so that links survive restarts.
use crate::{CoreError, Result};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted key: HMAC-SHA256 keys shorter than its 32-byte output weaken it.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner { key: <redacted> }")
    }
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link has expired")]
    Expired,
    #[error("the link's signature is invalid")]
    BadSignature,
}

impl LinkSigner {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        LinkSigner { key: key.into() }
    }

    /// Use `configured` when given (at least [`MIN_KEY_BYTES`] bytes); else read
    /// `{data_dir}/signing.key`, creating it on first use, readable by this user only.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Self> {
        if let Some(secret) = configured.filter(|s| !s.is_empty()) {
            if secret.len() < MIN_KEY_BYTES {
                return Err(CoreError::Config(format!(
                    "SIGNING_KEY must be at least {MIN_KEY_BYTES} bytes long (it is {}); generate one \
                     with `openssl rand -hex 32`",
                    secret.len()
                )));
            }
            return Ok(LinkSigner::new(secret.as_bytes().to_vec()));
        }
        let path = data_dir.join("signing.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = hex::decode(text.trim())
                    .map_err(|e| CoreError::Config(format!("{} is not hex: {e}", path.display())))?;
                if key.len() < MIN_KEY_BYTES {
                    return Err(CoreError::Config(format!(
                        "{} holds a key shorter than 32 bytes",
                        path.display()
                    )));
                }
                Ok(LinkSigner::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                std::fs::create_dir_all(data_dir)?;
                // Write then rename, so that a crash never leaves a half-written key behind. The
                // file is created 0600: it is never readable by others, not even for a moment.
                let tmp = data_dir.join("signing.key.tmp");
                let _ = std::fs::remove_file(&tmp);
                write_private(&tmp, hex::encode(&key).as_bytes())?;
                std::fs::rename(&tmp, &path)?;
                Ok(LinkSigner::new(key))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn mac(&self, key: &str, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The hex signature for `key` valid until `expires` (Unix seconds).
    pub fn sign(&self, key: &str, expires: i64) -> String {
        hex::encode(self.mac(key, expires).finalize().into_bytes())
    }

    /// Check a link's signature (in constant time) and then its expiry against `now`.
    pub fn verify(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> std::result::Result<(), LinkError> {
        let given = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        self.mac(key, expires)
            .verify_slice(&given)
            .map_err(|_| LinkError::BadSignature)?;
        if now > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// Create `path` (which must not exist) with mode 0600 and write `bytes` to it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_links_and_refuses_tampering_and_expiry() {
        let signer = LinkSigner::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let sig = signer.sign("images/thumbnail/a.jpg", 1000);
        assert_eq!(signer.verify("images/thumbnail/a.jpg", 1000, &sig, 999), Ok(()));
        assert_eq!(
            signer.verify("images/thumbnail/b.jpg", 1000, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify("images/thumbnail/a.jpg", 2000, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify("images/thumbnail/a.jpg", 1000, "zz", 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify("images/thumbnail/a.jpg", 1000, &sig, 1001),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn generated_key_is_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = LinkSigner::load_or_create(None, dir.path()).unwrap();
        let b = LinkSigner::load_or_create(None, dir.path()).unwrap();
        assert_eq!(a.sign("k", 1), b.sign("k", 1));
        let c = LinkSigner::load_or_create(Some("a configured secret of 32 bytes!"), dir.path()).unwrap();
        assert_ne!(a.sign("k", 1), c.sign("k", 1));
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_key_file_is_private_and_short_configured_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        LinkSigner::load_or_create(None, dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = LinkSigner::load_or_create(Some("too short"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }
}
