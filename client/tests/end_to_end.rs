//! The `thumbnail` binary against the real API, started in this process (AUTH_MODE=api-key,
//! SQLite and the local object directory): a folder with two photos and a corrupt file.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{Service, fixture, start_service};

/// Run `thumbnail ARGS` with the service in the environment and an empty config directory.
async fn thumbnail(service: &Service, key: &str, config_home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_thumbnail"))
        .args(args)
        .env("THUMBNAIL_URL", &service.url)
        .env("THUMBNAIL_API_KEY", key)
        .env("XDG_CONFIG_HOME", config_home)
        .env("HOME", config_home)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn photo_folder(root: &Path) -> PathBuf {
    let photos = root.join("photos");
    std::fs::create_dir_all(photos.join("more")).unwrap();
    std::fs::write(photos.join("beach.jpg"), fixture("photo.jpg")).unwrap();
    std::fs::write(photos.join("more/garden.png"), fixture("photo.png")).unwrap();
    // A PNG whose header is fine but whose data is cut short: accepted, then the job fails.
    let mut cut = fixture("photo.png");
    cut.truncate(cut.len() / 2);
    std::fs::write(photos.join("broken.png"), cut).unwrap();
    photos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_a_corrupt_file_lands_its_thumbnails_and_exits_1() {
    let service = start_service().await;
    let root = tempfile::tempdir().unwrap();
    let photos = photo_folder(root.path());
    let out = root.path().join("thumbs");
    let output = thumbnail(
        &service,
        &service.key,
        root.path(),
        &[
            "--output",
            "json",
            "upload",
            photos.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--width",
            "64",
            "--height",
            "48",
            "--fit",
            "contain",
            "--concurrency",
            "2",
        ],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // No progress bar when stderr is not a terminal (and none in JSON mode).
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_of(&output);
    assert_eq!(
        (report["files"].as_u64(), report["succeeded"].as_u64()),
        (Some(3), Some(2)),
        "{report}"
    );
    assert_eq!(report["failed"], 1);
    let results = report["results"].as_array().unwrap();
    let by_file = |name: &str| {
        results
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    let broken = by_file("broken.png");
    assert_eq!(broken["state"], "FAILURE", "{broken}");
    assert_eq!(broken["reason"], "CorruptImage", "{broken}");
    assert!(
        broken["job_id"].is_string() && broken["detail"].is_string(),
        "{broken}"
    );
    assert_eq!(broken["thumbnail"], Value::Null);
    for (name, written) in [("beach.jpg", "beach.jpg"), ("more/garden.png", "garden.png")] {
        let r = by_file(name);
        assert_eq!(r["state"], "SUCCESS", "{r}");
        assert!(!r["thumbhash"].as_str().unwrap_or_default().is_empty(), "{r}");
        let path = out.join(written);
        assert_eq!(r["thumbnail"].as_str(), path.to_str(), "{r}");
        let image = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            image.width() <= 64 && image.height() <= 48,
            "{}x{}",
            image.width(),
            image.height()
        );
        assert!(
            image.width() == 64 || image.height() == 48,
            "{}x{}",
            image.width(),
            image.height()
        );
    }
    let mut landed: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    landed.sort();
    assert_eq!(landed, ["beach.jpg", "garden.png"], "no partial files are left");

    // The job's placeholders and state, by id; and the list of failures.
    let id = by_file("beach.jpg")["job_id"].as_str().unwrap().to_owned();
    let status = json_of(
        &thumbnail(
            &service,
            &service.key,
            root.path(),
            &["--output", "json", "status", &id],
        )
        .await,
    );
    assert_eq!(status["status"], "SUCCESS");
    assert!(status["placeholder"]["blurhash"].is_string(), "{status}");
    let failures = json_of(
        &thumbnail(
            &service,
            &service.key,
            root.path(),
            &["--output", "json", "list", "--status", "failure"],
        )
        .await,
    );
    assert_eq!(failures.as_array().map(Vec::len), Some(1), "{failures}");
    assert_eq!(failures[0]["job_id"], broken["job_id"]);
    let fetched = root.path().join("again.jpg");
    let get = thumbnail(
        &service,
        &service.key,
        root.path(),
        &["get", &id, "-o", fetched.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        get.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(out.join("beach.jpg")).unwrap()
    );
    let watch = thumbnail(
        &service,
        &service.key,
        root.path(),
        &["watch", broken["job_id"].as_str().unwrap()],
    )
    .await;
    assert_eq!(watch.status.code(), Some(1), "a failed job's watch exits 1");
    assert!(String::from_utf8_lossy(&watch.stdout).contains("CorruptImage"));
    service.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_server_detail_and_settings_come_from_the_config_file() {
    let service = start_service().await;
    let root = tempfile::tempdir().unwrap();
    // Not an image at all: refused at upload with the server's detail; the others still go.
    std::fs::write(root.path().join("notes.txt"), b"shopping list").unwrap();
    std::fs::write(root.path().join("ok.webp"), fixture("photo.webp")).unwrap();
    // The URL and key from the config file alone.
    let config_dir = root.path().join("thumbnail");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        format!("url = \"{}\"\napi_key = \"{}\"\n", service.url, service.key),
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_thumbnail"))
        .args([
            "upload",
            root.path().join("notes.txt").to_str().unwrap(),
            root.path().join("ok.webp").to_str().unwrap(),
        ])
        .env_remove("THUMBNAIL_URL")
        .env_remove("THUMBNAIL_API_KEY")
        .env("XDG_CONFIG_HOME", root.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let notes = stdout
        .lines()
        .find(|l| l.contains("notes.txt"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        notes.contains("REJECTED") && notes.contains("unsupported image format"),
        "{notes}"
    );
    let ok = stdout.lines().find(|l| l.contains("ok.webp")).unwrap();
    assert!(ok.contains("SUCCESS"), "{ok}");
    assert!(stdout.contains("2 files: 1 succeeded, 1 did not"), "{stdout}");

    // A wrong key: every command says why and exits 3.
    let denied = thumbnail(&service, "thn_wrong", root.path(), &["list"]).await;
    assert_eq!(denied.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // Keys: an admin makes one, lists it, revokes it; a user may not.
    let created = json_of(
        &thumbnail(
            &service,
            &service.admin_key,
            root.path(),
            &["--output", "json", "keys", "create", "bob", "--name", "laptop"],
        )
        .await,
    );
    let id = created["id"].as_str().unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("thn_"), "{created}");
    let listed = thumbnail(&service, &service.admin_key, root.path(), &["keys", "list"]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains(id));
    let revoked = json_of(
        &thumbnail(
            &service,
            &service.admin_key,
            root.path(),
            &["--output", "json", "keys", "revoke", id],
        )
        .await,
    );
    assert_eq!(revoked["state"], "revoked");
    let forbidden = thumbnail(&service, &service.key, root.path(), &["keys", "list"]).await;
    assert_eq!(forbidden.status.code(), Some(3));
    service.stop.cancel();
}
