//! A token issuer for `scripts/test-openapi.sh`: the tests' own issuer (`tests/common/issuer.rs`,
//! a JWKS and discovery document over HTTP, keys made with aws-lc-rs), on a free loopback port.
//! Prints `issuer=URL` and `token=JWT` (an admin token for audience `thumbnail-api`, valid for an
//! hour), then serves until killed.
#[path = "../tests/common/issuer.rs"]
mod issuer;

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let issuer = issuer::TestIssuer::start().await;
    let key = issuer::SigningKey::rsa("openapi-test");
    issuer.publish(&key);
    let token = key.sign(&issuer.claims("thumbnail-api", "schemathesis", "admin submit read", 3600));
    let mut out = std::io::stdout();
    writeln!(out, "issuer={}", issuer.url).unwrap();
    writeln!(out, "token={token}").unwrap();
    out.flush().unwrap();
    std::future::pending::<()>().await;
}
