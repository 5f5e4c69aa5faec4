//! A token issuer run by the test itself: RSA, P-256 and Ed25519 keys made with aws-lc-rs, a
//! real JWKS and OIDC discovery document served over HTTP on a free loopback port, and JWTs
//! signed here byte by byte (base64url header and claims, signed with aws-lc-rs), independently
//! of the `jsonwebtoken` crate the service verifies them with.
//!
//! Also used by `examples/test_issuer.rs` for scripts/test-openapi.sh.
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// One signing key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    /// RS256, ES256 or EdDSA.
    pub alg: &'static str,
    signer: Signer,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        let generated = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let der = generated.as_der().unwrap();
        SigningKey {
            kid: kid.into(),
            alg: "RS256",
            signer: Signer::Rsa(RsaKeyPair::from_pkcs8(der.as_ref()).unwrap()),
        }
    }

    pub fn ec(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        SigningKey {
            kid: kid.into(),
            alg: "ES256",
            signer: Signer::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                    .unwrap(),
            ),
        }
    }

    pub fn ed(kid: &str) -> Self {
        SigningKey {
            kid: kid.into(),
            alg: "EdDSA",
            signer: Signer::Ed(Ed25519KeyPair::generate().unwrap()),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(key) => {
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
                json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                       "n": b64(&components.n), "e": b64(&components.e)})
            }
            Signer::Ec(key) => {
                let point = key.public_key().as_ref();
                assert_eq!(point[0], 4, "an uncompressed P-256 point");
                json!({"kty": "EC", "kid": self.kid, "alg": "ES256", "use": "sig", "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Signer::Ed(key) => {
                json!({"kty": "OKP", "kid": self.kid, "alg": "EdDSA", "use": "sig", "crv": "Ed25519",
                       "x": b64(key.public_key().as_ref())})
            }
        }
    }

    /// A compact JWS of `claims` with this key's `kid` and `alg` in its header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": self.alg, "typ": "JWT", "kid": self.kid}), claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Rsa(key) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                    .unwrap();
                out
            }
            Signer::Ec(key) => key.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Ed(key) => key.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }
}

struct Published {
    issuer: String,
    keys: Mutex<Vec<Value>>,
    jwks_fetches: AtomicUsize,
}

/// The issuer's HTTP server, serving `/.well-known/openid-configuration` and `/jwks.json`.
pub struct TestIssuer {
    /// The issuer (`iss`), also its base URL.
    pub url: String,
    published: Arc<Published>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(published): State<Arc<Published>>) -> axum::Json<Value> {
    axum::Json(json!({
        "issuer": published.issuer,
        "jwks_uri": format!("{}/jwks.json", published.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
}

async fn jwks(State(published): State<Arc<Published>>) -> axum::Json<Value> {
    published.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"keys": *published.keys.lock().unwrap()}))
}

impl TestIssuer {
    /// Serve an empty JWKS on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let published = Arc::new(Published {
            issuer: url.clone(),
            keys: Mutex::new(Vec::new()),
            jwks_fetches: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks.json", get(jwks))
            .with_state(published.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestIssuer {
            url,
            published,
            server,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.url)
    }

    /// Put `key` into the JWKS (key rotation at the issuer).
    pub fn publish(&self, key: &SigningKey) {
        self.published.keys.lock().unwrap().push(key.jwk());
    }

    /// How often the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.published.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Claims of a token of this issuer for `audience`, owner `sub`, `scope`, expiring in
    /// `expires_in` seconds (negative: already expired).
    pub fn claims(&self, audience: &str, sub: &str, scope: &str, expires_in: i64) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.url, "aud": audience, "sub": sub, "scope": scope,
               "iat": now, "nbf": now - 5, "exp": now + expires_in})
    }
}
