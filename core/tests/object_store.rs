//! The object store's contract, checked against both backends: a local directory (the embedded
//! default) and a real S3 server (s3s-fs, started by `scripts/test.sh`).
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::{Duration, Instant};
use thumbnail_core::CoreError;
use thumbnail_core::objects::{ObjectStore, S3Config, S3ObjectStore, read_credentials_file};
use thumbnail_core::testsupport::{Backend, TestObjectStore, s3_store, test_s3_config, unique_name};

/// Run one check against each backend, as two tests: `name::embedded` and `name::server`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(super::TestObjectStore::new(super::Backend::Embedded).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server() {
                super::$name(super::TestObjectStore::new(super::Backend::Server).await).await;
            }
        }
    )*};
}

conformance!(
    bytes_round_trip,
    missing_objects_are_not_found,
    presigned_urls_download_the_object,
);

async fn bytes_round_trip(store: TestObjectStore) {
    let key = "images/thumbnail/0b7e/round-trip.png";
    assert!(!store.exists(key).await.unwrap());
    let data = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
    store.put_bytes(key, data.clone(), "image/png").await.unwrap();
    assert!(store.exists(key).await.unwrap());
    assert_eq!(store.get(key).await.unwrap(), data);
    // Overwriting replaces the whole object.
    store
        .put_bytes(key, Bytes::from_static(b"short"), "image/png")
        .await
        .unwrap();
    assert_eq!(store.get(key).await.unwrap(), Bytes::from_static(b"short"));
    // An empty object is an object.
    store
        .put_bytes("empty", Bytes::new(), "application/octet-stream")
        .await
        .unwrap();
    assert!(store.exists("empty").await.unwrap());
    assert_eq!(store.get("empty").await.unwrap(), Bytes::new());
    // A key that is the prefix of another is a different object, which does not exist. (Not
    // asked of s3s-fs: it keeps objects as files and answers 500 for a key that is one of its
    // directories; S3 and MinIO answer 404.)
    if store.backend == Backend::Embedded {
        assert!(!store.exists("images/thumbnail/0b7e").await.unwrap());
        assert!(
            !store
                .exists("images/thumbnail/0b7e/round-trip.png/x")
                .await
                .unwrap()
        );
        assert!(matches!(
            store.get("images/thumbnail").await,
            Err(CoreError::ObjectNotFound(_))
        ));
        store.delete("images/thumbnail").await.unwrap();
    }
    store.delete(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
    store.delete(key).await.unwrap(); // deleting a missing object is fine
    assert!(store.exists("empty").await.unwrap());
    store.ping().await.unwrap();
    match store.backend {
        Backend::Embedded => {
            assert_eq!(store.backend(), "local");
            assert_eq!(store.bucket(), "local");
        }
        Backend::Server => {
            let config = store.s3_config.as_ref().unwrap();
            assert_eq!(store.backend(), "s3");
            assert_eq!(store.bucket(), config.bucket);
            assert_eq!(store.endpoint_url(), config.endpoint_url.as_deref().unwrap());
        }
    }
}

async fn missing_objects_are_not_found(store: TestObjectStore) {
    match store.get("images/original/missing.jpg").await {
        Err(CoreError::ObjectNotFound(key)) => assert_eq!(key, "images/original/missing.jpg"),
        other => panic!("expected ObjectNotFound, got {other:?}"),
    }
    assert!(!store.exists("images/original/missing.jpg").await.unwrap());
    let err = store.get("nothing/here").await.unwrap_err();
    assert!(
        !err.is_transient(),
        "a missing object is not worth retrying: {err:?}"
    );
}

/// A file of `len` pseudo-random bytes (not compressible, not repetitive) and its SHA-256.
fn random_file(len: usize) -> (tempfile::NamedTempFile, [u8; 32]) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut hasher = Sha256::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in chunk.iter_mut() {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        hasher.update(&chunk[..n]);
        left -= n;
    }
    file.flush().unwrap();
    (file, hasher.finalize().into())
}

/// Storing a file streams it: the process's peak memory while `put_file` sends 30 MiB grows by
/// far less than the file. Measured in a child process (this test binary re-run for one test),
/// whose peak resident memory (VmHWM, reset just before) belongs to the upload alone.
mod large_files_are_streamed {
    #[test]
    fn embedded() {
        super::large_file_in_a_child("embedded");
    }
    #[test]
    fn server() {
        super::large_file_in_a_child("server");
    }
}

const LARGE_FILE_CHILD: &str = "OBJECT_STORE_LARGE_FILE_CHILD";
const LARGE_FILE_BYTES: usize = 30 * 1024 * 1024 + 123;
/// What the upload may add to the peak: buffers of a few MiB, not the 30 MiB file.
const LARGE_FILE_PEAK_BOUND_KIB: u64 = 8 * 1024;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn large_file_in_a_child(backend: &str) {
    if std::env::var(LARGE_FILE_CHILD).as_deref() == Ok(backend) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(large_file_child(backend));
        return;
    }
    let name = format!("large_files_are_streamed::{backend}");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(LARGE_FILE_CHILD, backend)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed: {stdout}{stderr}");
    let peak: u64 = stdout
        .lines()
        .find_map(|l| l.split("UPLOAD_PEAK_KIB=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the child printed no peak: {stdout}{stderr}"));
    assert!(
        peak < LARGE_FILE_PEAK_BOUND_KIB,
        "{backend}: storing a {LARGE_FILE_BYTES}-byte file raised the peak by {peak} KiB"
    );
    eprintln!("{backend}: put_file of {LARGE_FILE_BYTES} bytes raised the peak by {peak} KiB");
}

async fn large_file_child(backend: &str) {
    let store = TestObjectStore::new(match backend {
        "embedded" => Backend::Embedded,
        _ => Backend::Server,
    })
    .await;
    let (file, digest) = random_file(LARGE_FILE_BYTES);
    let key = "images/original/large.bin";
    // A small object first, so that connections and clients exist before the measurement.
    store
        .put_bytes("warm-up", Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap();
    // Reset the peak (VmHWM) to the current resident size: making the file does not count.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    store
        .put_file(key, file.path(), "application/octet-stream")
        .await
        .unwrap();
    let peak = status_kib("VmHWM:").saturating_sub(before);
    println!("UPLOAD_PEAK_KIB={peak}");
    // The object is the file, byte for byte (read back after the measurement).
    let back = store.get(key).await.unwrap();
    assert_eq!(back.len(), LARGE_FILE_BYTES);
    assert_eq!(
        <[u8; 32]>::from(Sha256::digest(&back)),
        digest,
        "the bytes read back differ"
    );
    // A missing source file is an error, and leaves nothing behind.
    let missing = std::env::temp_dir().join(unique_name("no-such-file"));
    assert!(
        store
            .put_file("images/original/none.bin", &missing, "image/jpeg")
            .await
            .is_err()
    );
    assert!(!store.exists("images/original/none.bin").await.unwrap());
}

async fn presigned_urls_download_the_object(store: TestObjectStore) {
    let key = "images/thumbnail/presigned image.jpg";
    let data = Bytes::from_static(b"\xff\xd8\xff\xe0 not really a JPEG, but exact bytes \x00\x01\x02");
    store.put_bytes(key, data.clone(), "image/jpeg").await.unwrap();
    let url = store.presign_get(key, Duration::from_secs(300)).await.unwrap();
    match store.backend {
        Backend::Embedded => {
            // The local store's links are served by the API, which this crate does not have:
            // check the link's form and its signature instead.
            let signer = store.signer.as_ref().unwrap();
            let parsed = url::Url::parse(&url).unwrap();
            assert_eq!(parsed.host_str(), Some("127.0.0.1"));
            let path = parsed.path().strip_prefix("/files/").expect("a /files/ link");
            let path_key = percent_decode(path);
            assert_eq!(path_key, key);
            let query = |name: &str| {
                parsed
                    .query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| panic!("no {name} in {url}"))
            };
            let expires: i64 = query("expires").parse().unwrap();
            let now = chrono::Utc::now().timestamp();
            assert!(
                (now + 290..=now + 310).contains(&expires),
                "expires {expires}, now {now}"
            );
            let signature = query("signature");
            signer.verify(&path_key, expires, &signature, now).unwrap();
            assert!(
                signer
                    .verify("images/thumbnail/other.jpg", expires, &signature, now)
                    .is_err()
            );
            assert!(signer.verify(&path_key, expires + 1, &signature, now).is_err());
            assert!(
                signer
                    .verify(&path_key, expires, &signature, expires + 1)
                    .is_err()
            );
        }
        Backend::Server => {
            // A plain HTTP client, no SDK and no credentials, downloads the exact bytes.
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            assert_eq!(response.bytes().await.unwrap(), data);
            // Tampering with the URL breaks the signature.
            let tampered = url.replace("presigned%20image", "presigned%20imagf");
            assert_ne!(tampered, url);
            let response = reqwest::get(&tampered).await.unwrap();
            assert!(response.status().is_client_error(), "{}", response.status());
            // Without the signature, the object is not public.
            let bare = url.split('?').next().unwrap();
            assert!(reqwest::get(bare).await.unwrap().status().is_client_error());
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[tokio::test]
async fn presigned_urls_expire() {
    let store = TestObjectStore::s3().await;
    store
        .put_bytes("k", Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap();
    // Valid at first, refused once its seconds are up: poll for that with a deadline. On a busy
    // machine the first request can come after the expiry; such a round proves nothing either
    // way and is repeated with a new URL.
    const EXPIRY: Duration = Duration::from_secs(2);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut was_valid = false;
    for _ in 0..5 {
        let signed = std::time::Instant::now();
        let url = store.presign_get("k", EXPIRY).await.unwrap();
        let deadline = signed + Duration::from_secs(20);
        loop {
            let sent = std::time::Instant::now();
            let status = client.get(&url).send().await.unwrap().status();
            if status.is_success() {
                was_valid = true;
            } else {
                assert!(status.is_client_error(), "{status}");
                assert!(
                    // X-Amz-Date has whole seconds: the expiry can come up to 1 s early.
                    was_valid || sent.duration_since(signed) >= EXPIRY - Duration::from_secs(1),
                    "the presigned URL was refused {:?} after signing, before it expired",
                    sent.duration_since(signed)
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the presigned URL never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if was_valid {
            return;
        }
    }
    panic!("in five rounds the first request never came before the expiry (machine too busy)");
}

#[tokio::test]
async fn presigned_urls_use_the_public_endpoint() {
    let internal = test_s3_config("public");
    let internal_url = url::Url::parse(internal.endpoint_url.as_deref().unwrap()).unwrap();
    let port = internal_url.port().unwrap();
    assert_eq!(internal_url.host_str(), Some("127.0.0.1"));
    // The same server under another name: what clients outside the cluster would use.
    let public = S3Config {
        public_endpoint_url: Some(format!("http://localhost:{port}")),
        ..internal.clone()
    };
    let private_store = s3_store(&internal).await;
    let public_store = s3_store(&public).await;
    let data = Bytes::from_static(b"thumbnail bytes");
    public_store
        .put_bytes("t.png", data.clone(), "image/png")
        .await
        .unwrap();

    let private_link = private_store
        .presign_get("t.png", Duration::from_secs(60))
        .await
        .unwrap();
    let public_link = public_store
        .presign_get("t.png", Duration::from_secs(60))
        .await
        .unwrap();
    let private_link = url::Url::parse(&private_link).unwrap();
    let public_link = url::Url::parse(&public_link).unwrap();
    assert_eq!(private_link.host_str(), Some("127.0.0.1"));
    assert_eq!(public_link.host_str(), Some("localhost"));
    assert_eq!(public_link.port(), Some(port));
    assert_eq!(public_store.endpoint_url(), format!("http://localhost:{port}"));
    assert_eq!(
        private_store.endpoint_url(),
        internal.endpoint_url.as_deref().unwrap()
    );
    // The signature covers the host: the public link works under the public name ...
    let response = reqwest::get(public_link.as_str()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), data);
    // ... and rewriting a link's host instead of signing for it does not.
    let mut rewritten = private_link.clone();
    rewritten.set_host(Some("localhost")).unwrap();
    assert!(
        reqwest::get(rewritten.as_str())
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
}

#[tokio::test]
async fn buckets_are_created_when_asked() {
    let config = test_s3_config("created");
    let store = S3ObjectStore::new(&config).await.unwrap();
    // Missing and not to be created: a configuration error naming the bucket.
    match store.ensure_bucket(false).await {
        Err(CoreError::Config(message)) => assert!(message.contains(&config.bucket), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert!(store.ping().await.is_err());
    store.ensure_bucket(true).await.unwrap();
    store.ensure_bucket(true).await.unwrap();
    store.ensure_bucket(false).await.unwrap();
    store.ping().await.unwrap();
    let buckets = store.client().list_buckets().send().await.unwrap();
    assert!(
        buckets
            .buckets()
            .iter()
            .any(|b| b.name() == Some(config.bucket.as_str()))
    );
    // Two replicas starting at once both succeed.
    let racing = test_s3_config("racing");
    let a = S3ObjectStore::new(&racing).await.unwrap();
    let b = S3ObjectStore::new(&racing).await.unwrap();
    let (ra, rb) = tokio::join!(a.ensure_bucket(true), b.ensure_bucket(true));
    ra.unwrap();
    rb.unwrap();
    // An empty bucket name is refused up front.
    let empty = S3Config {
        bucket: String::new(),
        ..config
    };
    assert!(matches!(
        S3ObjectStore::new(&empty).await,
        Err(CoreError::Config(_))
    ));
}

/// Wrong keys are refused by S3 itself (its signature check), as a permanent error: the same
/// server, bucket and request work with the right keys first, so the failure can only be the keys.
#[tokio::test]
async fn wrong_keys_are_refused() {
    let right = test_s3_config("wrong-keys");
    // Positive control: the right keys create the bucket and store and read an object.
    let store = s3_store(&right).await;
    store
        .put_bytes("control", Bytes::from_static(b"ok"), "text/plain")
        .await
        .unwrap();
    assert_eq!(store.get("control").await.unwrap(), Bytes::from_static(b"ok"));

    let wrong_secret = S3Config {
        secret_access_key: Some("not-the-secret".into()),
        ..right.clone()
    };
    let wrong_id = S3Config {
        access_key_id: Some("NOT-THE-KEY-ID".into()),
        ..right.clone()
    };
    // AWS answers an unknown key id with InvalidAccessKeyId; s3s with NotSignedUp.
    for (what, config, codes) in [
        ("wrong secret", &wrong_secret, &["SignatureDoesNotMatch"][..]),
        (
            "unknown key id",
            &wrong_id,
            &["InvalidAccessKeyId", "NotSignedUp"][..],
        ),
    ] {
        let store = S3ObjectStore::new(config).await.unwrap();
        // An operation with an error body: S3's own error code says why.
        let err = store
            .put_bytes("refused", Bytes::from_static(b"x"), "text/plain")
            .await
            .unwrap_err();
        let CoreError::ObjectStoreDenied(message) = &err else {
            panic!("{what}: expected ObjectStoreDenied, got {err:?}");
        };
        assert!(
            codes.iter().any(|code| message.contains(&format!("({code})"))),
            "{what}: expected S3's error code {codes:?}: {message}"
        );
        assert!(
            !err.is_transient(),
            "{what}: wrong keys are not worth retrying: {err:?}"
        );
        assert_eq!(err.dependency(), Some("object store (S3)"));
        // HEAD has no body: its 403 alone marks the start-up bucket check as refused, not down.
        for err in [
            store.ensure_bucket(false).await.unwrap_err(),
            store.exists("control").await.unwrap_err(),
            store.get("control").await.unwrap_err(),
        ] {
            assert!(matches!(err, CoreError::ObjectStoreDenied(_)), "{what}: {err:?}");
            assert!(!err.is_transient(), "{what}: {err:?}");
        }
    }
    // Nothing was written with the wrong keys.
    assert!(!store.exists("refused").await.unwrap());
}

#[tokio::test]
async fn unreachable_s3_is_a_transient_error_and_fails_fast() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = S3Config {
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        ..test_s3_config("unreachable")
    };
    let store = S3ObjectStore::new(&config).await.unwrap();
    let started = Instant::now();
    let err = store
        .put_bytes("k", Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::ObjectStore(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.dependency(), Some("object store (S3)"));
    for result in [
        store.get("k").await.map(|_| ()),
        store.exists("k").await.map(|_| ()),
        store.ping().await,
        store.ensure_bucket(true).await,
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, CoreError::ObjectStore(_)), "{err:?}");
        assert!(err.is_transient());
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A server that accepts connections but never answers (a black hole): the readiness check
/// gives up after its short deadline instead of hanging.
#[tokio::test]
async fn a_silent_s3_fails_the_readiness_check_quickly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let config = S3Config {
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        ..test_s3_config("silent")
    };
    let store = S3ObjectStore::new(&config).await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), store.ping())
        .await
        .expect("the readiness check hangs")
        .unwrap_err();
    assert!(matches!(err, CoreError::ObjectStore(_)), "{err:?}");
    assert!(err.is_transient(), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= thumbnail_core::objects::PING_TIMEOUT - Duration::from_millis(100)
            && took < thumbnail_core::objects::PING_TIMEOUT + Duration::from_secs(3),
        "took {took:?}"
    );
    held.abort();
}

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn credentials_from_a_mounted_secret_file() {
    let base = test_s3_config("creds-file");
    let (id, secret) = (
        base.access_key_id.clone().unwrap(),
        base.secret_access_key.clone().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    // An env file, as a Secret with one multi-line entry mounted as a file would be.
    let file = write_file(
        dir.path(),
        "s3.env",
        &format!("# S3 keys\nAWS_ACCESS_KEY_ID={id}\nexport AWS_SECRET_ACCESS_KEY=\"{secret}\"\nOTHER=1\n"),
    );
    // The file wins over keys given otherwise (here: wrong ones).
    let config = S3Config {
        access_key_id: Some("ignored".into()),
        secret_access_key: Some("ignored".into()),
        credentials_file: Some(file.clone()),
        ..base.clone()
    };
    let store = s3_store(&config).await;
    store
        .put_bytes("k", Bytes::from_static(b"via file"), "text/plain")
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), Bytes::from_static(b"via file"));

    // A whole Secret mounted as a directory: one file per key.
    let secret_dir = dir.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    write_file(&secret_dir, "AWS_ACCESS_KEY_ID", &format!("{id}\n"));
    write_file(&secret_dir, "AWS_SECRET_ACCESS_KEY", &secret);
    let config = S3Config {
        access_key_id: None,
        secret_access_key: None,
        credentials_file: Some(secret_dir),
        ..base.clone()
    };
    let store = s3_store(&config).await;
    assert_eq!(store.get("k").await.unwrap(), Bytes::from_static(b"via file"));

    // Wrong keys in the file are refused by the server.
    let wrong = write_file(
        dir.path(),
        "wrong.env",
        &format!("AWS_ACCESS_KEY_ID={id}\nAWS_SECRET_ACCESS_KEY=wrong\n"),
    );
    let config = S3Config {
        credentials_file: Some(wrong),
        ..base.clone()
    };
    assert!(S3ObjectStore::new(&config).await.unwrap().ping().await.is_err());

    // A missing file or key is a configuration error, at construction.
    for (name, text) in [("no-secret.env", "AWS_ACCESS_KEY_ID=abc\n"), ("empty.env", "")] {
        let config = S3Config {
            credentials_file: Some(write_file(dir.path(), name, text)),
            ..base.clone()
        };
        match S3ObjectStore::new(&config).await {
            Err(CoreError::Config(message)) => assert!(message.contains(name), "{message}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("{name} accepted"),
        }
    }
    let config = S3Config {
        credentials_file: Some(dir.path().join("does-not-exist")),
        ..base
    };
    assert!(matches!(
        S3ObjectStore::new(&config).await,
        Err(CoreError::Config(_))
    ));
}

#[test]
fn credentials_file_formats() {
    let dir = tempfile::tempdir().unwrap();
    let aws_style = write_file(
        dir.path(),
        "credentials",
        "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalr/K7MDENG+bPxRfiCY\n\
         aws_session_token='token'\n",
    );
    let keys = read_credentials_file(&aws_style).unwrap();
    assert_eq!(keys.access_key_id, "AKIDEXAMPLE");
    assert_eq!(keys.secret_access_key, "wJalr/K7MDENG+bPxRfiCY");
    assert_eq!(keys.session_token.as_deref(), Some("token"));
    // Values may contain '='; CRLF line ends are fine.
    let crlf = write_file(
        dir.path(),
        "crlf.env",
        "AWS_ACCESS_KEY_ID=id\r\nAWS_SECRET_ACCESS_KEY=a=b==\r\n",
    );
    let keys = read_credentials_file(&crlf).unwrap();
    assert_eq!(keys.secret_access_key, "a=b==");
    assert_eq!(keys.session_token, None);
    // Errors never print the secret.
    let no_id = write_file(dir.path(), "no-id.env", "AWS_SECRET_ACCESS_KEY=supersecret\n");
    let message = read_credentials_file(&no_id).unwrap_err().to_string();
    assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
    assert!(!message.contains("supersecret"), "{message}");
    assert!(!format!("{keys:?}").contains("a=b=="));
}
