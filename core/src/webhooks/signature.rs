//! Standard Webhooks signatures: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`,
//! keyed with the bytes of a `whsec_` secret (base64 after the prefix). Several secrets (during a
//! rotation) give several signatures, separated by spaces; a receiver accepts any it knows.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The signing secrets of WEBHOOK_SECRET. Never printed: `Debug` shows only how many there are.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// One or more `whsec_<base64>` values separated by spaces or commas (the new one first
    /// during a rotation). Errors name the position, never the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let keys = raw
            .split([',', ' ', '\n', '\t'])
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, secret)| {
                let Some(encoded) = secret.strip_prefix(PREFIX) else {
                    return Err(format!("secret {} does not start with '{PREFIX}'", i + 1));
                };
                let key = STANDARD
                    .decode(encoded)
                    .map_err(|_| format!("secret {}: the part after '{PREFIX}' is not base64", i + 1))?;
                if key.len() < 16 {
                    return Err(format!(
                        "secret {}: {} bytes; use at least 16 (24 to 64 random bytes are usual)",
                        i + 1,
                        key.len()
                    ));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no secret given".into());
        }
        Ok(Secrets(keys))
    }

    /// The `webhook-signature` header value for this message. Pure.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|key| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specifications_test_vector() {
        // The Standard Webhooks reference libraries' test vector.
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secrets.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let old = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = Secrets::parse("whsec_dGhpcyBpcyBhIG5ldyBzZWNyZXQga2V5IQ==").unwrap();
        let both = Secrets::parse(
            "whsec_dGhpcyBpcyBhIG5ldyBzZWNyZXQga2V5IQ==, whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        let header = both.sign("msg_1", 10, b"{}");
        assert_eq!(
            header,
            format!(
                "{} {}",
                new.sign("msg_1", 10, b"{}"),
                old.sign("msg_1", 10, b"{}")
            )
        );
    }

    #[test]
    fn bad_secrets_are_named_by_position_not_value() {
        let err = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,hunter2").unwrap_err();
        assert_eq!(err, "secret 2 does not start with 'whsec_'");
        assert!(!err.contains("hunter2"));
        assert!(Secrets::parse("whsec_!!!").unwrap_err().contains("not base64"));
        assert!(
            Secrets::parse("whsec_c2hvcnQ=")
                .unwrap_err()
                .contains("at least 16")
        );
        assert!(Secrets::parse(" , ").unwrap_err().contains("no secret"));
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{secrets:?}"), "Secrets(1 redacted)");
    }
}
