//! Latency of each S3 operation the service uses, against the S3 server named by the TEST_S3_*
//! variables (`eval "$(scripts/dev-services.sh env)"`):
//!
//!     cargo run -p thumbnail-core --example s3_latency -- FILE [ROUNDS]
//!
//! Prints the median and worst of ROUNDS (default 20) streamed PUTs from FILE (as uploads do),
//! in-memory PUTs, GETs and 5 kB PUTs (as thumbnails). This is how a ~40 ms stall on every PUT
//! (Nagle's algorithm left on by the SDK's default HTTP client) and every GET (the same on the
//! `s3s-fs` binary's sockets) was found.
use std::time::{Duration, Instant};
use thumbnail_core::objects::ObjectStore;
use thumbnail_core::testsupport::{s3_store, test_s3_config};

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<10} median {:>7.2} ms   worst {:>7.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: s3_latency FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(20, |n| n.parse().expect("ROUNDS is a number"));
    let store = s3_store(&test_s3_config("latency")).await;
    let bytes = bytes::Bytes::from(std::fs::read(&path).expect("readable FILE"));
    let (mut put_file, mut put_bytes, mut get, mut put_small) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds.max(1) {
        let t = Instant::now();
        store
            .put_file(&format!("file-{i}"), path.as_ref(), "image/jpeg")
            .await
            .unwrap();
        put_file.push(t.elapsed());
        let t = Instant::now();
        store
            .put_bytes(&format!("bytes-{i}"), bytes.clone(), "image/jpeg")
            .await
            .unwrap();
        put_bytes.push(t.elapsed());
        let t = Instant::now();
        let got = store.get(&format!("bytes-{i}")).await.unwrap();
        get.push(t.elapsed());
        assert_eq!(got.len(), bytes.len());
        let small = bytes.slice(..bytes.len().min(5000));
        let t = Instant::now();
        store
            .put_bytes(&format!("small-{i}"), small, "image/jpeg")
            .await
            .unwrap();
        put_small.push(t.elapsed());
    }
    println!("{} bytes, {} rounds", bytes.len(), rounds.max(1));
    summary("put file", put_file);
    summary("put bytes", put_bytes);
    summary("get", get);
    summary("put 5 kB", put_small);
}
