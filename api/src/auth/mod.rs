//! Who is calling (`AUTH_MODE`): nobody in particular (`none`, the original contract), the owner
//! of an API key (`api-key`), or the subject of an OIDC/JWT token (`jwt`). The middleware here
//! authenticates every request to a protected route and leaves its [`Principal`] in the
//! request's extensions; handlers take it as an extractor and check scopes and ownership.
pub mod api_key;
pub mod jwt;

use crate::config::{AuthArgs, AuthMode};
use crate::error::{ApiError, ApiResult};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use thumbnail_core::apikeys::{DynKeyStore, Scope, Scopes};

pub use api_key::ApiKeyAuth;
pub use jwt::JwtAuth;

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `AUTH_MODE=none`: nothing.
    Anonymous,
    /// An API key, by its public id.
    ApiKey { id: String },
    /// A JWT from the configured issuer.
    Token,
}

/// The caller a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The owner it acts as; `None` only without authentication.
    pub owner: Option<String>,
    pub scopes: Scopes,
    pub credential: Credential,
    /// The key's default `webhook_url`, for uploads that name none.
    pub default_webhook_url: Option<String>,
}

impl Principal {
    /// The caller of `AUTH_MODE=none`: may upload and read, and sees every job, as in the
    /// original service.
    pub fn anonymous() -> Self {
        Principal {
            owner: None,
            scopes: Scopes::default_for_keys(),
            credential: Credential::Anonymous,
            default_webhook_url: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.credential == Credential::Anonymous
    }

    /// Sees every owner's jobs: admins, and everyone without authentication.
    pub fn sees_all(&self) -> bool {
        self.is_anonymous() || self.scopes.is_admin()
    }

    /// 403 unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the '{scope}' scope; the credentials have: {}",
                if self.scopes.is_empty() {
                    "none".to_owned()
                } else {
                    self.scopes.to_string()
                }
            )))
        }
    }

    /// Whether a job of `owner` is visible to the caller. Others' jobs answer 404, exactly like
    /// jobs that do not exist.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.sees_all() || (owner.is_some() && owner == self.owner.as_deref())
    }

    /// The owner to record for a new job, given the `owner` field of the request: without
    /// authentication the field as given; for admins the field, else themselves; for everyone
    /// else themselves, and a field naming someone else is refused.
    pub fn owner_for_new_job(&self, requested: Option<String>) -> ApiResult<Option<String>> {
        self.on_behalf_of(requested, "submit jobs")
    }

    /// The owner a list is restricted to, given the `owner` parameter: for admins and without
    /// authentication the parameter (none: everyone's jobs); for everyone else themselves, and a
    /// parameter naming someone else is refused.
    pub fn owner_for_list(&self, requested: Option<String>) -> ApiResult<Option<String>> {
        if self.sees_all() {
            return Ok(requested);
        }
        self.on_behalf_of(requested, "list jobs")
    }

    fn on_behalf_of(&self, requested: Option<String>, what: &str) -> ApiResult<Option<String>> {
        if self.is_anonymous() {
            return Ok(requested);
        }
        if self.scopes.is_admin() {
            return Ok(requested.or_else(|| self.owner.clone()));
        }
        match requested {
            Some(other) if Some(other.as_str()) != self.owner.as_deref() => Err(ApiError::Forbidden(
                format!("owner: only admins may {what} on behalf of another owner"),
            )),
            _ => Ok(self.owner.clone()),
        }
    }
}

/// Credentials refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials; how to send them.
    #[error("credentials required: send {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    /// What the check needs is down (the key store, the issuer's JWKS): 503.
    #[error("{0} is unavailable, try again later")]
    Unavailable(&'static str),
}

/// Verifies credentials according to `AUTH_MODE`.
pub enum Authenticator {
    None,
    ApiKey(ApiKeyAuth),
    Jwt(JwtAuth),
}

/// The shared authenticator and what it protects.
pub struct AuthState {
    pub authenticator: Authenticator,
    pub metrics_auth: bool,
    pub docs_auth: bool,
}

pub type SharedAuth = Arc<AuthState>;

impl Authenticator {
    /// Build the authenticator for `args` (the key store is used in api-key mode).
    pub async fn new(args: &AuthArgs, keys: DynKeyStore) -> thumbnail_core::Result<Self> {
        Ok(match args.auth_mode {
            AuthMode::None => Authenticator::None,
            AuthMode::ApiKey => {
                Authenticator::ApiKey(ApiKeyAuth::new(keys, args.admin_api_key.as_deref()).await?)
            }
            AuthMode::Jwt => Authenticator::Jwt(JwtAuth::new(args).await?),
        })
    }

    pub fn mode(&self) -> AuthMode {
        match self {
            Authenticator::None => AuthMode::None,
            Authenticator::ApiKey(_) => AuthMode::ApiKey,
            Authenticator::Jwt(_) => AuthMode::Jwt,
        }
    }

    /// The caller of a request with these headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        match self {
            Authenticator::None => Ok(Principal::anonymous()),
            Authenticator::ApiKey(keys) => {
                let presented = presented_credential(headers, true)?.ok_or(AuthError::Missing(
                    "`Authorization: Bearer <API key>` or `X-API-Key: <API key>`",
                ))?;
                keys.verify(presented).await
            }
            Authenticator::Jwt(jwt) => {
                let presented = presented_credential(headers, false)?
                    .ok_or(AuthError::Missing("`Authorization: Bearer <token>`"))?;
                jwt.verify(presented).await
            }
        }
    }

    /// The `WWW-Authenticate` challenge of a refusal (RFC 6750).
    fn challenge(&self, error: &AuthError) -> String {
        let realm = "Bearer realm=\"thumbnail\"";
        match error {
            AuthError::Missing(_) => realm.to_owned(),
            other => format!(
                "{realm}, error=\"invalid_token\", error_description=\"{}\"",
                other.to_string().replace(['"', '\\'], "'")
            ),
        }
    }

    pub fn refusal(&self, error: AuthError) -> ApiError {
        match error {
            AuthError::Unavailable(dependency) => ApiError::Unavailable {
                dependency,
                source: None,
            },
            error => ApiError::Unauthorized {
                challenge: self.challenge(&error),
                detail: error.to_string(),
            },
        }
    }
}

/// The credential sent: `Authorization: Bearer X`, or (api-key mode) `X-API-Key: X`. Both with
/// different values, another scheme, or an unreadable header are refused.
fn presented_credential(headers: &HeaderMap, allow_api_key_header: bool) -> Result<Option<&str>, AuthError> {
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| AuthError::Invalid("the Authorization header is not readable text".into()))?;
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Invalid(format!(
                    "the Authorization scheme must be Bearer, got '{scheme}'"
                )));
            }
            Some(rest.trim())
        }
    };
    let api_key = match headers.get("x-api-key") {
        Some(value) if allow_api_key_header => Some(
            value
                .to_str()
                .map_err(|_| AuthError::Invalid("the X-API-Key header is not readable text".into()))?
                .trim(),
        ),
        _ => None,
    };
    match (bearer, api_key) {
        (Some(a), Some(b)) if a != b => Err(AuthError::Invalid(
            "Authorization and X-API-Key carry different credentials".into(),
        )),
        (Some(""), _) | (None, Some("")) => Err(AuthError::Invalid("the credential is empty".into())),
        (Some(credential), _) | (None, Some(credential)) => Ok(Some(credential)),
        (None, None) => Ok(None),
    }
}

/// Middleware of the protected routes: authenticate, then hand the [`Principal`] on.
pub async fn authenticate(State(auth): State<SharedAuth>, mut request: Request, next: Next) -> Response {
    match auth.authenticator.authenticate(request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => auth.authenticator.refusal(error).into_response(),
    }
}

/// Middleware of `/metrics` with METRICS_AUTH: admin credentials.
pub async fn require_admin(State(auth): State<SharedAuth>, request: Request, next: Next) -> Response {
    if !auth.metrics_auth || matches!(auth.authenticator, Authenticator::None) {
        return next.run(request).await;
    }
    match auth.authenticator.authenticate(request.headers()).await {
        Ok(principal) => match principal.require(Scope::Admin) {
            Ok(()) => next.run(request).await,
            Err(e) => e.into_response(),
        },
        Err(error) => auth.authenticator.refusal(error).into_response(),
    }
}

/// Middleware of `/docs` and `/openapi.json` with DOCS_AUTH: any valid credentials.
pub async fn require_credentials(State(auth): State<SharedAuth>, request: Request, next: Next) -> Response {
    if !auth.docs_auth {
        return next.run(request).await;
    }
    match auth.authenticator.authenticate(request.headers()).await {
        Ok(_) => next.run(request).await,
        Err(error) => auth.authenticator.refusal(error).into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::Internal("a protected route was served without the authentication layer".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key_principal(owner: &str, scopes: &[Scope]) -> Principal {
        Principal {
            owner: Some(owner.into()),
            scopes: Scopes::of(scopes),
            credential: Credential::ApiKey { id: "x".into() },
            default_webhook_url: None,
        }
    }

    #[test]
    fn owners_see_their_own_admins_all_and_anonymous_callers_all() {
        let alice = key_principal("alice", &[Scope::Read]);
        assert!(alice.may_see(Some("alice")));
        assert!(!alice.may_see(Some("bob")));
        assert!(!alice.may_see(None));
        assert!(key_principal("root", &[Scope::Admin]).may_see(Some("bob")));
        assert!(Principal::anonymous().may_see(None));
    }

    #[test]
    fn only_admins_act_on_behalf_of_others() {
        let alice = key_principal("alice", &[Scope::Submit]);
        assert_eq!(alice.owner_for_new_job(None).unwrap().as_deref(), Some("alice"));
        assert_eq!(
            alice.owner_for_new_job(Some("alice".into())).unwrap().as_deref(),
            Some("alice")
        );
        assert!(matches!(
            alice.owner_for_new_job(Some("bob".into())),
            Err(ApiError::Forbidden(_))
        ));
        let admin = key_principal("root", &[Scope::Admin]);
        assert_eq!(
            admin.owner_for_new_job(Some("bob".into())).unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(admin.owner_for_list(None).unwrap(), None);
        assert_eq!(admin.owner_for_new_job(None).unwrap().as_deref(), Some("root"));
        assert_eq!(Principal::anonymous().owner_for_list(None).unwrap(), None);
        assert!(matches!(alice.require(Scope::Read), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn credentials_come_from_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_credential(&headers, true), Ok(None));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(presented_credential(&headers, true), Ok(Some("abc")));
        headers.insert("x-api-key", HeaderValue::from_static("abc"));
        assert_eq!(presented_credential(&headers, true), Ok(Some("abc")));
        headers.insert("x-api-key", HeaderValue::from_static("other"));
        assert!(presented_credential(&headers, true).is_err());
        headers.remove(header::AUTHORIZATION);
        assert_eq!(presented_credential(&headers, true), Ok(Some("other")));
        assert_eq!(presented_credential(&headers, false), Ok(None));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(presented_credential(&headers, true).is_err());
    }
}
