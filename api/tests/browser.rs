//! The upload page in a real browser: headless Chromium (Debian's package) driven over WebDriver
//! by chromedriver (`webdriver`: the commands used), against the real app in-process. scripts/test.sh installs both; without
//! chromedriver these tests fail, saying how to install it.
//!
//! A screenshot of the page after the uploads is kept at `<target>/browser-artifacts/page.png`
//! (the path is printed); docs/web-page.png is a copy of one.
mod common;
#[path = "browser/webdriver.rs"]
mod webdriver;

use base64::Engine;
use common::{Stores, TestApp, fixture};
use futures::FutureExt;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thumbnail_api::config::AuthMode;
use thumbnail_core::apikeys::Scope;
use webdriver::Session as Client;

/// How long the page may take to bring every card to its final state.
const DEADLINE: Duration = Duration::from_secs(60);

/// Where test artefacts go: `<target dir>/browser-artifacts`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("creating the artefacts directory");
    dir
}

/// A chromedriver this test started (killed when dropped).
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Start chromedriver on a free port and wait until it answers `/status` as ready.
async fn start_chromedriver(log_name: &str) -> Chromedriver {
    let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let log = std::fs::File::create(artifacts_dir().join(log_name)).expect("chromedriver's log file");
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run '{binary}' ({e}): the browser tests need Chromium and chromedriver \
                 (`apt-get install chromium chromium-driver`; scripts/test.sh installs them), or \
                 CHROMEDRIVER set to the driver's path"
            )
        });
    let driver = Chromedriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = common::http_client();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(format!("{}/status", driver.url)).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == json!(true)
        {
            return driver;
        }
        assert!(Instant::now() < until, "chromedriver did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A headless Chromium session.
async fn browser(driver: &Chromedriver) -> Client {
    let mut chrome = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1100,900",
            "--force-device-scale-factor=1",
            "--lang=en-US",
        ],
    });
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&binary).exists() {
        chrome["binary"] = json!(binary);
    }
    let capabilities = json!({ "browserName": "chrome", "goog:chromeOptions": chrome });
    Client::start(&driver.url, capabilities)
        .await
        .unwrap_or_else(|e| panic!("starting Chromium through chromedriver failed: {e}"))
}

/// Run `body` with a browser session, and end the session whatever happens.
async fn with_browser<F, Fut>(log_name: &str, body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let driver = start_chromedriver(log_name).await;
    let client = browser(&driver).await;
    let outcome = AssertUnwindSafe(body(client.clone())).catch_unwind().await;
    let _ = client.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Evaluate `script` (a function body that returns a value) in the page.
async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script)
        .await
        .unwrap_or_else(|e| panic!("running a script in the page failed: {e}\n{script}"))
}

/// The cards as the page shows them.
const CARDS: &str = r#"
    return Array.from(document.querySelectorAll('#cards .card')).map(card => {
        const img = card.querySelector('img.thumb');
        const link = card.querySelector('a.download');
        return {
            name: card.querySelector('.name').textContent,
            state: card.dataset.state,
            stateText: card.querySelector('.state').textContent,
            detail: card.querySelector('.detail').textContent,
            httpStatus: card.dataset.httpStatus || null,
            jobId: card.dataset.jobId || null,
            loaded: card.classList.contains('loaded'),
            broken: card.classList.contains('broken'),
            placeholder: card.classList.contains('has-placeholder'),
            placeholderWidth: card.querySelector('canvas.placeholder').width,
            imgComplete: img.complete,
            naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight,
            src: img.getAttribute('src'),
            href: link.hidden ? null : link.href,
            download: link.getAttribute('download'),
        };
    });
"#;

/// Records every card's states as they change (installed before the files are chosen).
const RECORD_STATES: &str = r#"
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', e =>
        window.__violations.push(`${e.effectiveDirective} ${e.blockedURI}`));
    window.__states = {};
    const note = card => {
        const name = card.querySelector('.name').textContent;
        const seen = (window.__states[name] = window.__states[name] || []);
        if (seen[seen.length - 1] !== card.dataset.state) seen.push(card.dataset.state);
    };
    new MutationObserver(records => {
        for (const r of records) {
            if (r.type === 'childList') r.addedNodes.forEach(n => n.classList && n.classList.contains('card') && note(n));
            else if (r.target.classList && r.target.classList.contains('card')) note(r.target);
        }
    }).observe(document.getElementById('cards'), {
        childList: true, subtree: true, attributes: true, attributeFilter: ['data-state'],
    });
    return true;
"#;

const FINISHED: [&str; 3] = ["SUCCESS", "FAILURE", "REFUSED"];

/// Poll the page until there are `count` cards, all final, and every SUCCESS card's image has
/// loaded (or failed to, which the assertions after report).
async fn wait_for_final_cards(client: &Client, count: usize) -> Vec<Value> {
    let until = Instant::now() + DEADLINE;
    loop {
        let cards = eval(client, CARDS).await;
        let cards = cards.as_array().cloned().unwrap_or_default();
        let done = cards.len() == count
            && cards.iter().all(|c| {
                let state = c["state"].as_str().unwrap_or_default();
                // A thumbnail has loaded, or failed to (the card says so), once its event came.
                FINISHED.contains(&state)
                    && (state != "SUCCESS" || c["loaded"] == json!(true) || c["broken"] == json!(true))
            });
        if done {
            return cards;
        }
        assert!(
            Instant::now() < until,
            "the cards did not all reach a final state within {DEADLINE:?}: {cards:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `selector` is displayed.
async fn wait_displayed(client: &Client, selector: &str) {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(element) = client.find(selector).await
            && element.is_displayed().await.unwrap_or(false)
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "{selector} was not displayed within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_value(client: &Client, selector: &str, value: &str) {
    let input = client.find(selector).await.expect(selector);
    input.clear().await.expect("clearing an input");
    input.send_keys(value).await.expect("typing into an input");
}

/// Choose `files` in the page's file input, as a user picking them would.
async fn choose_files(client: &Client, files: &[PathBuf]) {
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    client
        .find("input#files")
        .await
        .expect("the file input")
        .send_keys(&paths.join("\n"))
        .await
        .expect("choosing files");
}

/// The URLs the page requested (itself, its assets, every API call and image).
async fn requested_urls(client: &Client) -> Vec<String> {
    let names = eval(
        client,
        "return [location.href].concat(performance.getEntries().map(e => e.name));",
    )
    .await;
    names
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn card<'a>(cards: &'a [Value], name: &str) -> &'a Value {
    cards
        .iter()
        .find(|c| c["name"] == json!(name))
        .unwrap_or_else(|| panic!("no card for {name}: {cards:#?}"))
}

/// Write the files to upload: the two fixtures and a text file whose name is markup.
fn upload_files() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        dir.path().join("photo.jpg"),
        dir.path().join("photo.png"),
        dir.path().join("<img src=x onerror=alert(1)>.txt"),
    ];
    std::fs::write(&files[0], fixture("photo.jpg")).unwrap();
    std::fs::write(&files[1], fixture("photo.png")).unwrap();
    std::fs::write(&files[2], b"these are notes, not an image\n").unwrap();
    (dir, files)
}

fn save_screenshot(png: &[u8], name: &str) -> PathBuf {
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// The card's placeholder canvas holds exactly what the thumbhash crate (the encoder's, the
/// reference's Rust port) decodes from the job's ThumbHash: the page's JavaScript port agrees.
async fn placeholder_is_the_reference_decoding(client: &Client, app: &TestApp, id: &str) {
    let job: Value = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hash = job["placeholder"]["thumbhash"].as_str().expect("a ThumbHash");
    let bytes = base64::engine::general_purpose::STANDARD.decode(hash).unwrap();
    let (w, h, expected) = thumbhash::thumb_hash_to_rgba(&bytes).expect("a valid ThumbHash");
    let drawn = eval(
        client,
        &format!(
            "const c = document.querySelector('#cards .card[data-job-id=\"{id}\"] canvas.placeholder');
             return {{w: c.width, h: c.height,
                      px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)}};"
        ),
    )
    .await;
    assert_eq!(
        (drawn["w"].as_u64(), drawn["h"].as_u64()),
        (Some(w as u64), Some(h as u64))
    );
    let pixels: Vec<u8> = drawn["px"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(pixels.len(), expected.len());
    // f64 in JavaScript, f32 in Rust: a channel may round one step apart, no more.
    let worst = pixels
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "the page's ThumbHash decoding differs by {worst} from the reference"
    );
}

/// Three files chosen, size 120x90: two thumbnails appear (over their placeholders, with
/// download links), and the text file's card shows the API's 415 detail. Both with the embedded
/// stores (images from this origin) and with PostgreSQL and S3 (images from the S3 server's
/// origin, which the page's Content-Security-Policy must allow).
#[tokio::test]
async fn three_files_reach_their_final_states_in_a_real_browser() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|_| {}).await;
        let log = format!("chromedriver-{stores:?}.log").to_lowercase();
        with_browser(&log, |client| async move {
            upload_three_files(&client, &app, stores).await;
        })
        .await;
    }
}

async fn upload_three_files(client: &Client, app: &TestApp, stores: Stores) {
    client.goto(&app.url("/")).await.expect("opening the page");
    assert_eq!(client.title().await.unwrap(), "Thumbnails");
    set_value(client, "#width", "120").await;
    set_value(client, "#height", "90").await;
    eval(client, RECORD_STATES).await;
    let (_dir, files) = upload_files();
    choose_files(client, &files).await;

    let cards = wait_for_final_cards(client, 3).await;
    for name in ["photo.jpg", "photo.png"] {
        let c = card(&cards, name);
        assert_eq!(c["state"], "SUCCESS", "{c:#?}");
        assert_eq!(c["loaded"], true, "the thumbnail did not load: {c:#?}");
        assert_eq!(
            (c["naturalWidth"].as_u64(), c["naturalHeight"].as_u64()),
            (Some(120), Some(90)),
            "{c:#?}"
        );
        assert_eq!(
            c["placeholder"], true,
            "no ThumbHash placeholder was drawn: {c:#?}"
        );
        assert!(c["placeholderWidth"].as_u64().unwrap() > 1, "{c:#?}");
        let href = c["href"].as_str().expect("a download link");
        assert_eq!(Some(href), c["src"].as_str());
        match stores {
            // The embedded store's links are on PUBLIC_URL (http://localhost:PORT here: another
            // origin than the page's 127.0.0.1, which the policy allows as the object store's).
            Stores::Embedded => assert!(
                href.starts_with(&format!("{}/files/", app.state.objects.endpoint_url())),
                "{href}"
            ),
            Stores::PostgresS3 => assert!(href.contains("X-Amz-Signature="), "{href}"),
        }
        let ext = if name.ends_with("jpg") { "jpg" } else { "png" };
        assert_eq!(c["download"], format!("photo-thumbnail.{ext}"));
    }
    for name in ["photo.jpg", "photo.png"] {
        let id = card(&cards, name)["jobId"].as_str().unwrap().to_owned();
        placeholder_is_the_reference_decoding(client, app, &id).await;
    }
    let text = card(&cards, "<img src=x onerror=alert(1)>.txt");
    assert_eq!(text["state"], "REFUSED", "{text:#?}");
    assert_eq!(text["httpStatus"], "415", "{text:#?}");
    assert_eq!(text["stateText"], "Refused (HTTP 415)");
    let detail = text["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("unsupported image format: detected text/plain"),
        "{detail}"
    );
    // The file name is text, not markup.
    assert_eq!(
        eval(
            client,
            "return document.querySelectorAll('#cards img:not(.thumb)').length;"
        )
        .await,
        0
    );

    // Each job was watched live, in order, through its event stream.
    let states = eval(client, "return window.__states;").await;
    let order = ["QUEUED", "UPLOADING", "PENDING", "STARTED", "SUCCESS"];
    for name in ["photo.jpg", "photo.png"] {
        let seen: Vec<&str> = states[name]
            .as_array()
            .unwrap_or_else(|| panic!("no states recorded for {name}: {states}"))
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(seen.contains(&"PENDING"), "{name}: {seen:?}");
        assert_eq!(seen.last(), Some(&"SUCCESS"), "{name}: {seen:?}");
        let ranks: Vec<usize> = seen
            .iter()
            .map(|s| order.iter().position(|o| o == s).unwrap())
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "{name}: states out of order: {seen:?}"
        );
    }
    let urls = requested_urls(client).await;
    for name in ["photo.jpg", "photo.png"] {
        let id = card(&cards, name)["jobId"].as_str().unwrap().to_owned();
        assert!(
            urls.iter()
                .any(|u| u.ends_with(&format!("/api/v1/jobs/{id}/events"))),
            "{name}'s events were not streamed: {urls:#?}"
        );
    }
    // Nothing the page did was blocked by its own Content-Security-Policy.
    assert_eq!(eval(client, "return window.__violations;").await, json!([]));
    let png = client.screenshot().await.expect("a screenshot");
    save_screenshot(&png, &format!("page-{stores:?}.png").to_lowercase());
    if stores == Stores::Embedded {
        save_screenshot(&png, "page.png");
    }
}

/// With AUTH_MODE=api-key the page asks for a key (a wrong one is refused and asked again),
/// keeps it in session storage only, sends it in the Authorization header, and no URL it
/// requests contains it.
#[tokio::test]
async fn the_page_asks_for_an_api_key_and_never_puts_it_in_a_url() {
    let app = Stores::Embedded
        .spawn(|c| c.auth.auth_mode = AuthMode::ApiKey)
        .await;
    let key = app.create_key("alice", &[Scope::Submit, Scope::Read]).await;
    with_browser("chromedriver-api-key.log", |client| async move {
        client.goto(&app.url("/")).await.expect("opening the page");
        // The page itself needs no key; its first API call is refused, so it asks.
        wait_displayed(&client, "#key-form").await;
        assert!(
            client
                .find("label[for=api-key]")
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("API key")
        );
        set_value(&client, "#api-key", "thk_wrong_key").await;
        client.find("#key-submit").await.unwrap().click().await.unwrap();
        // Refused: asked again, saying why.
        let until = Instant::now() + DEADLINE;
        loop {
            let why = eval(
                &client,
                "return document.getElementById('key-form').hidden ? '' : document.getElementById('key-why').textContent;",
            )
            .await;
            if why.as_str().is_some_and(|w| w.contains("refused the key")) {
                break;
            }
            assert!(Instant::now() < until, "the wrong key was not refused: {why}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        set_value(&client, "#api-key", &key).await;
        client.find("#key-submit").await.unwrap().click().await.unwrap();

        let (_dir, files) = upload_files();
        choose_files(&client, &files[..1]).await;
        let cards = wait_for_final_cards(&client, 1).await;
        let c = card(&cards, "photo.jpg");
        assert_eq!(c["state"], "SUCCESS", "{c:#?}");
        assert_eq!(c["loaded"], true, "{c:#?}");

        let storage = eval(
            &client,
            "return {session: sessionStorage.getItem('thumbnail.apiKey'), local: localStorage.length, cookies: document.cookie};",
        )
        .await;
        assert_eq!(storage["session"], json!(key));
        assert_eq!(storage["local"], 0);
        assert_eq!(storage["cookies"], "");
        let urls = requested_urls(&client).await;
        assert!(urls.iter().any(|u| u.contains("/api/v1/thumbnails/")), "{urls:#?}");
        assert!(urls.iter().any(|u| u.contains("/events")), "{urls:#?}");
        for url in &urls {
            assert!(!url.contains(&key), "the key is in a URL: {url}");
            assert!(!url.contains("thk_wrong_key"), "a key is in a URL: {url}");
        }
        let png = client.screenshot().await.expect("a screenshot");
        save_screenshot(&png, "page-api-key.png");
    })
    .await;
}
