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

    /// Use `configured` when given; else read `{data_dir}/signing.key`, creating it on first use.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Self> {
        if let Some(secret) = configured.filter(|s| !s.is_empty()) {
            return Ok(LinkSigner::new(secret.as_bytes().to_vec()));
        }
        let path = data_dir.join("signing.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = hex::decode(text.trim())
                    .map_err(|e| CoreError::Config(format!("{} is not hex: {e}", path.display())))?;
                if key.len() < 32 {
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
                // Write then rename, so that a crash never leaves a half-written key behind.
                let tmp = data_dir.join("signing.key.tmp");
                std::fs::write(&tmp, hex::encode(&key))?;
                restrict_permissions(&tmp)?;
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

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> std::io::Result<()> {
    Ok(())
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
        let c = LinkSigner::load_or_create(Some("configured secret"), dir.path()).unwrap();
        assert_ne!(a.sign("k", 1), c.sign("k", 1));
    }
}
