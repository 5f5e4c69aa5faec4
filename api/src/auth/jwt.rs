//! `AUTH_MODE=jwt`: OIDC/JWT bearer tokens, verified with the issuer's published keys (JWKS).
//!
//! The JWKS comes from JWT_JWKS_URL or the issuer's discovery document
//! (`{JWT_ISSUER}/.well-known/openid-configuration`, its `jwks_uri`). Keys are cached; a token
//! naming a key id the cache does not hold makes the JWKS be fetched again (the issuer rotated
//! its keys), at most once per JWT_JWKS_REFRESH_SECONDS so that made-up key ids cannot make this
//! service hammer the issuer, and in any case after JWT_JWKS_MAX_AGE_SECONDS. Only asymmetric
//! algorithms are accepted (an HMAC "key" from a JWKS would be public).
use super::{AuthError, Credential, Principal};
use crate::config::AuthArgs;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use std::sync::RwLock;
use std::time::{Duration, Instant};
use thumbnail_core::apikeys::{Scopes, validate_owner};
use thumbnail_core::{CoreError, Result};
use tracing::{info, warn};

/// Longest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable key of the issuer.
#[derive(Clone)]
struct IssuerKey {
    kid: Option<String>,
    /// The key's own `alg`, when the JWKS names one.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<IssuerKey>,
    fetched: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// The JWKS URL, once configured or discovered.
    jwks_url: Option<String>,
}

pub struct JwtAuth {
    issuer: String,
    audience: String,
    owner_claim: String,
    scope_claim: String,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    refresh_min: Duration,
    max_age: Duration,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// One fetch at a time; the others wait and use its result.
    fetch: tokio::sync::Mutex<FetchState>,
}

/// Parse JWT_ALGORITHMS: asymmetric algorithms only. Pure.
pub fn parse_algorithms(text: &str) -> std::result::Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let alg: Algorithm = name
            .parse()
            .map_err(|_| format!("'{name}' is not a JWS algorithm"))?;
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(format!(
                "'{name}' is symmetric: tokens verified against a public JWKS must be signed \
                 asymmetrically (RS256, ES256, EdDSA, ...)"
            ));
        }
        out.push(alg);
    }
    if out.is_empty() {
        return Err("no algorithm given".into());
    }
    Ok(out)
}

fn required(value: &Option<String>, name: &str) -> Result<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CoreError::Config(format!("AUTH_MODE=jwt needs {name}")))
}

impl JwtAuth {
    pub async fn new(args: &AuthArgs) -> Result<Self> {
        let issuer = required(&args.jwt_issuer, "JWT_ISSUER")?;
        let audience = required(&args.jwt_audience, "JWT_AUDIENCE")?;
        let algorithms = parse_algorithms(&args.jwt_algorithms)
            .map_err(|e| CoreError::Config(format!("JWT_ALGORITHMS: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| CoreError::Config(format!("HTTP client for the JWKS: {e}")))?;
        let auth = JwtAuth {
            issuer,
            audience,
            owner_claim: args.jwt_owner_claim.clone(),
            scope_claim: args.jwt_scope_claim.clone(),
            algorithms,
            leeway: args.jwt_leeway_seconds,
            refresh_min: Duration::from_secs(args.jwt_jwks_refresh_seconds),
            max_age: Duration::from_secs(args.jwt_jwks_max_age_seconds.max(1)),
            http,
            cache: RwLock::new(KeyCache::default()),
            fetch: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                jwks_url: args.jwt_jwks_url.clone().filter(|u| !u.trim().is_empty()),
            }),
        };
        // A first fetch now, so that the first request need not wait; an issuer that is down
        // does not stop start-up (tokens are answered 503 until its keys can be fetched).
        if let Err(e) = auth.refresh().await {
            warn!(error = %e, "could not fetch the token issuer's keys yet");
        }
        Ok(auth)
    }

    /// The principal of a presented token.
    pub async fn verify(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        let invalid = |what: &str| AuthError::Invalid(what.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("the token is not a JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "the token's algorithm {:?} is not accepted (JWT_ALGORITHMS)",
                header.alg
            )));
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?
            .claims;
        let owner = match claims.get(&self.owner_claim) {
            Some(Value::String(owner)) => owner.clone(),
            _ => {
                return Err(AuthError::Invalid(format!(
                    "the token has no string claim '{}' to name its owner (JWT_OWNER_CLAIM)",
                    self.owner_claim
                )));
            }
        };
        validate_owner(&owner)
            .map_err(|e| AuthError::Invalid(format!("the token's owner claim '{}' {e}", self.owner_claim)))?;
        let scopes = match claims.get(&self.scope_claim) {
            Some(Value::String(list)) => Scopes::from_known(list.split(' ')),
            Some(Value::Array(items)) => Scopes::from_known(items.iter().filter_map(Value::as_str)),
            _ => Scopes::NONE,
        };
        Ok(Principal {
            owner: Some(owner),
            scopes,
            credential: Credential::Token,
            default_webhook_url: None,
        })
    }

    /// The key that verifies a token with `kid` and `alg`: cached, or fetched again when
    /// unknown (rate-limited) or when the cache is older than JWT_JWKS_MAX_AGE_SECONDS.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> std::result::Result<IssuerKey, AuthError> {
        let (found, fresh) = self.cached(kid, alg);
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.clone());
        }
        let mut fetch = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        let (found, fresh) = self.cached(kid, alg);
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.clone());
        }
        let due = fetch
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.refresh_min);
        if !fresh || due {
            fetch.last_attempt = Some(Instant::now());
            match self.fetch_keys(&mut fetch).await {
                Ok(keys) => {
                    info!(keys = keys.len(), "fetched the token issuer's keys");
                    *self.cache.write().expect("key cache") = KeyCache {
                        keys,
                        fetched: Some(Instant::now()),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "could not fetch the token issuer's keys");
                    if self.cache.read().expect("key cache").fetched.is_none() {
                        return Err(AuthError::Unavailable("the token issuer's keys (JWKS)"));
                    }
                }
            }
        }
        drop(fetch);
        self.cached(kid, alg).0.ok_or_else(|| {
            AuthError::Invalid(match kid {
                Some(kid) => format!("the token's key '{kid}' is not one of the issuer's keys"),
                None => "the token names no key (kid) and the issuer has several".to_owned(),
            })
        })
    }

    /// The cached key for `kid` and `alg`, and whether the cache is fresh.
    fn cached(&self, kid: Option<&str>, alg: Algorithm) -> (Option<IssuerKey>, bool) {
        let cache = self.cache.read().expect("key cache");
        let fresh = cache.fetched.is_some_and(|at| at.elapsed() < self.max_age);
        let usable = |k: &&IssuerKey| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
        let found = match kid {
            Some(kid) => cache
                .keys
                .iter()
                .filter(usable)
                .find(|k| k.kid.as_deref() == Some(kid)),
            // Without a kid, only an unambiguous key will do.
            None => {
                let mut matching = cache.keys.iter().filter(usable);
                match (matching.next(), matching.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        (found.cloned(), fresh)
    }

    async fn refresh(&self) -> std::result::Result<(), String> {
        let mut fetch = self.fetch.lock().await;
        fetch.last_attempt = Some(Instant::now());
        let keys = self.fetch_keys(&mut fetch).await?;
        *self.cache.write().expect("key cache") = KeyCache {
            keys,
            fetched: Some(Instant::now()),
        };
        Ok(())
    }

    async fn fetch_keys(&self, fetch: &mut FetchState) -> std::result::Result<Vec<IssuerKey>, String> {
        let url = match &fetch.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let document: Value = self.get_json(&discovery).await?;
                let url = document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{discovery} names no jwks_uri"))?
                    .to_owned();
                fetch.jwks_url = Some(url.clone());
                url
            }
        };
        let set: JwkSet = serde_json::from_value(self.get_json(&url).await?)
            .map_err(|e| format!("{url} is not a JWKS: {e}"))?;
        Ok(set.keys.iter().filter_map(usable_key).collect())
    }

    async fn get_json(&self, url: &str) -> std::result::Result<Value, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON: {e}"))
    }
}

/// A JWKS entry this service can verify signatures with: a signing key of a supported type.
fn usable_key(jwk: &Jwk) -> Option<IssuerKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let alg = jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok());
    Some(IssuerKey {
        kid: jwk.common.key_id.clone(),
        alg,
        family: key.family(),
        key,
    })
}

/// A refusal's `detail`, in words.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is not for this service (aud)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer (iss)".into(),
        ErrorKind::InvalidSignature => "the token's signature is invalid".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no '{claim}' claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's '{claim}' claim is malformed"),
        _ => "the token is malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        assert_eq!(
            parse_algorithms("RS256, ES256,EdDSA").unwrap(),
            vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        );
        assert!(parse_algorithms("HS256").unwrap_err().contains("symmetric"));
        assert!(parse_algorithms("none").is_err());
        assert!(parse_algorithms("").is_err());
    }
}
