//! The S3 server the test command and the benchmarks start: the `s3s-fs` crate's S3 implementation
//! (objects in a directory, SigV4 authentication) served exactly as its own `s3s-fs` binary does,
//! with one difference that matters for latency: every accepted socket gets `TCP_NODELAY`.
//!
//! Why: the `s3s-fs` binary leaves Nagle's algorithm on, so the tail of every GET response waits for
//! the client's delayed ACK (~40 ms on Linux) — a stall production S3 servers do not have (MinIO,
//! being Go, sets `TCP_NODELAY` on every connection). Benchmarks against it measured that stall
//! rather than our service.
//!
//! Usage: `s3-test-server --host 127.0.0.1 --port 9000 --access-key AK --secret-key SK DIR`
//! (the same arguments as `s3s-fs`). Prints `listening on http://ADDR` once it accepts connections.
//! Stops on SIGTERM or Ctrl-C, letting requests in flight finish for up to 10 s.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "S3 server over a directory (s3s-fs), for tests and benchmarks"
)]
struct Opt {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Access key required in requests' signatures (with --secret-key).
    #[arg(long, requires = "secret_key")]
    access_key: Option<String>,

    /// Secret key required in requests' signatures (with --access-key).
    #[arg(long, requires = "access_key")]
    secret_key: Option<String>,

    /// Directory holding the buckets.
    root: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opt = Opt::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let fs = s3s_fs::FileSystem::new(&opt.root)
        .map_err(|e| format!("cannot use {} as the data directory: {e:?}", opt.root.display()))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(fs);
        if let (Some(access_key), Some(secret_key)) = (opt.access_key, opt.secret_key) {
            builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        }
        builder.build()
    };

    let listener = TcpListener::bind((opt.host.as_str(), opt.port)).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    continue;
                }
            },
            _ = sigterm.recv() => break,
            _ = ctrl_c.as_mut() => break,
        };
        if let Err(err) = socket.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {err}");
        }
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after 10 s; stopping anyway");
    }
    Ok(())
}
