//! Serves the in-memory test API server until interrupted.
//!
//! Usage: `kube-test-apiserver [--port PORT] [--bind ADDR]` (default 127.0.0.1:8001).
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

#[tokio::main]
async fn main() {
    let mut port: u16 = 8001;
    let mut ip: IpAddr = [127, 0, 0, 1].into();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" | "-p" => port = args.next().and_then(|p| p.parse().ok()).expect("--port PORT"),
            "--bind" => ip = args.next().and_then(|p| p.parse().ok()).expect("--bind ADDR"),
            "--help" | "-h" => {
                println!("usage: kube-test-apiserver [--port PORT] [--bind ADDR]");
                return;
            }
            other => panic!("unknown argument {other:?}"),
        }
    }
    let server = kube_test_apiserver::TestApiServer::builder()
        .addr(SocketAddr::new(ip, port))
        .start()
        .await;
    println!("kube-test-apiserver listening on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
}
