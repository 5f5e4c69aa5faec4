//! The subcommands README promises, run as a user runs them: `render` (exit code 2 for input that
//! can never succeed, 1 for other errors), `migrate` and `openapi`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use thumbnail_core::testsupport::fresh_postgres_url;

fn api(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thumbnail-api"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args);
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn render_makes_the_default_thumbnail_and_honours_options() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("thumb.jpg");
    let out = run(&mut api(&[
        "render",
        arg(&fixture("photo.jpg")),
        "-o",
        arg(&out_path),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&out_path).unwrap();
    assert_eq!((img.width(), img.height()), (100, 100));
    assert_eq!(
        image::guess_format(&std::fs::read(&out_path).unwrap()).unwrap(),
        image::ImageFormat::Jpeg
    );
    // The summary on stderr is JSON.
    let summary: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(summary["width"], 100);
    assert_eq!(summary["format"], "jpeg");

    // Options, and `-o -` for stdout.
    let out = run(&mut api(&[
        "render",
        arg(&fixture("photo.png")),
        "-o",
        "-",
        "--width",
        "40",
        "--height",
        "20",
        "--fit",
        "fill",
        "--format",
        "webp",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        image::guess_format(&out.stdout).unwrap(),
        image::ImageFormat::WebP
    );
    let img = image::load_from_memory(&out.stdout).unwrap();
    assert_eq!((img.width(), img.height()), (40, 20));
}

#[test]
fn render_exits_2_for_input_that_can_never_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let not_an_image = dir.path().join("report.jpg");
    std::fs::write(&not_an_image, b"%PDF-1.7 not an image at all").unwrap();
    let jpeg = std::fs::read(fixture("photo.jpg")).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 2]).unwrap();
    let out_path = dir.path().join("out.jpg");
    for (input, extra, reason) in [
        (&not_an_image, &[][..], "UnsupportedFormat"),
        (&truncated, &[][..], "CorruptImage"),
        (
            &fixture("photo.jpg"),
            &["--max-image-pixels", "100"][..],
            "TooManyPixels",
        ),
        (
            &fixture("photo.jpg"),
            &["--max-upload-bytes", "10"][..],
            "FileTooLarge",
        ),
    ] {
        let mut args = vec!["render", arg(input), "-o", arg(&out_path)];
        args.extend_from_slice(extra);
        let out = run(&mut api(&args));
        assert_eq!(out.status.code(), Some(2), "{reason}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{reason}: {}", stderr(&out));
        assert!(!out_path.exists(), "{reason}: an output was written");
    }
    // Errors that are not the input's fault exit 1: a missing file, a bad option.
    let out = run(&mut api(&[
        "render",
        arg(&dir.path().join("missing.jpg")),
        "-o",
        arg(&out_path),
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.jpg"), "{}", stderr(&out));
    let out = run(&mut api(&[
        "render",
        arg(&fixture("photo.jpg")),
        "-o",
        arg(&out_path),
        "--fit",
        "round",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--fit"), "{}", stderr(&out));
    assert!(!out_path.exists());
}

#[test]
fn openapi_prints_the_committed_document() {
    let out = run(&mut api(&["openapi"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "`thumbnail-api openapi` differs from api/openapi.json"
    );
}

#[tokio::test]
async fn migrate_applies_the_migrations_once() {
    use sqlx::Connection;
    let url = fresh_postgres_url().await;
    let migrations =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/migrations/postgres"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
            .count() as i64;
    assert!(migrations > 0);
    for round in 1..=2 {
        let out = run(api(&["migrate"]).env("DATABASE_URL", &url));
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert!(stderr(&out).contains("migrations applied"), "{}", stderr(&out));
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(applied, migrations, "round {round}");
        let (jobs,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(jobs, 0);
        conn.close().await.unwrap();
    }
    // A database that does not answer is an error with a non-zero exit, not a hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(api(&["migrate"]).env("DATABASE_URL", format!("postgres://u:p@127.0.0.1:{port}/db")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("applying migrations"), "{}", stderr(&out));
    // Without a database URL it says which setting is missing.
    let out = run(&mut api(&["migrate"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));
}
