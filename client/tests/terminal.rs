//! `thumbnail upload` in a real terminal (tmux): the progress bar is drawn, then replaced by the
//! summary table. tmux is installed by scripts/test.sh when missing.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{fixture, start_service};

fn tmux(socket: &Path, args: &[&str]) -> String {
    let output = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux is installed (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Shell quoting for a path in the command tmux runs.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_bar_renders_and_ends_on_a_summary() {
    let service = start_service().await;
    let root = tempfile::tempdir().unwrap();
    let photos = root.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    // Enough files, one at a time, that the bar is drawn several times.
    for i in 0..24 {
        std::fs::write(photos.join(format!("p{i:02}.jpg")), fixture("photo.jpg")).unwrap();
    }
    let socket = root.path().join("tmux.sock");
    let log = root.path().join("terminal.log");
    let done = root.path().join("exit-code");
    let command = format!(
        "env THUMBNAIL_URL={} THUMBNAIL_API_KEY={} XDG_CONFIG_HOME={} {} upload {} --out {} --concurrency 1; echo $? > {}; sleep 600",
        service.url,
        service.key,
        quoted(root.path()),
        quoted(Path::new(env!("CARGO_BIN_EXE_thumbnail"))),
        quoted(&photos),
        quoted(&root.path().join("out")),
        quoted(&done),
    );
    // An idle shell first, so that the recording is on before the command writes anything.
    tmux(
        &socket,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "client",
            "-x",
            "200",
            "-y",
            "80",
            "sh",
        ],
    );
    // Everything the terminal receives, escape sequences included.
    tmux(
        &socket,
        &[
            "pipe-pane",
            "-t",
            "client",
            "-o",
            &format!("cat >> {}", quoted(&log)),
        ],
    );
    tmux(&socket, &["send-keys", "-t", "client", &command, "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "the upload did not end: {}",
            tmux(&socket, &["capture-pane", "-p", "-t", "client"])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let screen = tmux(&socket, &["capture-pane", "-p", "-t", "client"]);
    tmux(&socket, &["kill-server"]);
    service.stop.cancel();
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0", "{screen}");
    let stream = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    // The bar was drawn: its counter and its frame, redrawn in place (cursor movement).
    assert!(stream.contains("files done"), "no progress bar in:\n{stream}");
    assert!(stream.contains("KiB/"), "no byte counts in:\n{stream}");
    assert!(
        stream.contains("\u{1b}["),
        "no terminal control sequences in:\n{stream}"
    );
    // It ends on the summary, and the bar is gone from the screen.
    assert!(screen.contains("FILE") && screen.contains("RESULT"), "{screen}");
    assert!(screen.contains("24 files: 24 succeeded, 0 did not"), "{screen}");
    assert!(
        !screen.contains("files done"),
        "the bar is cleared at the end:\n{screen}"
    );
}
