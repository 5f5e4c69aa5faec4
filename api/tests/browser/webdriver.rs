//! The few W3C WebDriver commands the browser test uses (https://www.w3.org/TR/webdriver2/),
//! over the HTTP client the tests already have.
//!
//! Why not a WebDriver crate: `fantoccini` depends on Mozilla's `webdriver` crate (MPL-2.0, which
//! deny.toml's licence policy excludes) and pulls a second generation of a dozen crates (icu 1.5,
//! thiserror 1, cookie 0.16) that `multiple-versions = "deny"` refuses; `thirtyfour` brings
//! reqwest 0.13 and base64 0.23 beside ours. The protocol itself is a handful of JSON requests.
use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;

/// The element reference key of the W3C protocol.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A refused command: the driver's `error` and `message`.
#[derive(Debug)]
pub struct WebDriverError {
    pub command: String,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.command, self.error, self.message)
    }
}

pub type Result<T> = std::result::Result<T, WebDriverError>;

/// One browser session.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    base: String,
}

/// An element of the current page.
pub struct Element {
    session: Session,
    id: String,
}

impl Session {
    /// Start a browser with `capabilities` (the `alwaysMatch` set) on the driver at `driver_url`.
    pub async fn start(driver_url: &str, capabilities: Value) -> Result<Session> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("the WebDriver HTTP client");
        let value = send(
            &http,
            reqwest::Method::POST,
            &format!("{driver_url}/session"),
            Some(json!({ "capabilities": { "alwaysMatch": capabilities } })),
        )
        .await?;
        let id = value["sessionId"]
            .as_str()
            .expect("a new session's id")
            .to_owned();
        Ok(Session {
            http,
            base: format!("{driver_url}/session/{id}"),
        })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        send(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    pub async fn title(&self) -> Result<String> {
        let value = self.command(reqwest::Method::GET, "/title", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, selector: &str) -> Result<Element> {
        let value = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await?;
        let id = value[ELEMENT_KEY]
            .as_str()
            .expect("an element reference")
            .to_owned();
        Ok(Element {
            session: self.clone(),
            id,
        })
    }

    /// Run `script` (a function body; `return` gives the result) in the page.
    pub async fn execute(&self, script: &str) -> Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let value = self.command(reqwest::Method::GET, "/screenshot", None).await?;
        Ok(base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("the screenshot is base64"))
    }

    /// End the session (the browser quits).
    pub async fn close(&self) -> Result<()> {
        self.command(reqwest::Method::DELETE, "", None).await.map(drop)
    }
}

impl Element {
    async fn command(&self, method: reqwest::Method, what: &str, body: Option<Value>) -> Result<Value> {
        self.session
            .command(method, &format!("/element/{}{what}", self.id), body)
            .await
    }

    pub async fn clear(&self) -> Result<()> {
        self.command(reqwest::Method::POST, "/clear", Some(json!({})))
            .await
            .map(drop)
    }

    /// Type `text`; on an `<input type=file multiple>`, newline-separated paths choose files.
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.command(reqwest::Method::POST, "/value", Some(json!({ "text": text })))
            .await
            .map(drop)
    }

    pub async fn click(&self) -> Result<()> {
        self.command(reqwest::Method::POST, "/click", Some(json!({})))
            .await
            .map(drop)
    }

    pub async fn is_displayed(&self) -> Result<bool> {
        let value = self.command(reqwest::Method::GET, "/displayed", None).await?;
        Ok(value.as_bool().unwrap_or(false))
    }

    pub async fn text(&self) -> Result<String> {
        let value = self.command(reqwest::Method::GET, "/text", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }
}

/// One command: its `value` on success, the driver's error otherwise.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let command = format!("{method} {}", url.rsplit("/session").next().unwrap_or(url));
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let failed = |error: &str, message: String| WebDriverError {
        command: command.clone(),
        error: error.to_owned(),
        message,
    };
    let response = request
        .send()
        .await
        .map_err(|e| failed("unreachable", e.to_string()))?;
    let status = response.status();
    let mut reply: Value = response
        .json()
        .await
        .map_err(|e| failed("unreadable answer", e.to_string()))?;
    let value = reply["value"].take();
    if status.is_success() {
        Ok(value)
    } else {
        Err(failed(
            value["error"].as_str().unwrap_or("error"),
            value["message"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}
