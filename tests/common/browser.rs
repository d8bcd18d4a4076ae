//! A real Chromium, headless, driven through chromedriver with the W3C WebDriver protocol.
//!
//! [`Browser::start`] finds `chromium` and `chromedriver` (on PATH, or `STOPLAB_CHROME` and
//! `STOPLAB_CHROMEDRIVER`), starts chromedriver on a free loopback port and opens a session; dropping the
//! browser ends the session (the browser exits) and chromedriver, by its pid. When either program is missing
//! the test fails and says how to install it: these tests are never skipped silently.
//!
//! The client is the protocol itself, a dozen JSON-over-HTTP commands sent with `ureq` (already a
//! dependency). A client crate was tried first: `fantoccini` pulls in `webdriver` and with it ICU 1.x, whose
//! `yoke`/`zerovec` features unify into candle's in the test profile, so adding it rebuilt candle and every
//! test of the crate from scratch, a cost every checkout would pay for a few HTTP calls.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const INSTALL: &str = "the playground tests drive a real Chromium through chromedriver. Install both: \
    `apt-get install -y chromium chromium-driver` (Debian; elsewhere Chrome or Chromium with the matching \
    chromedriver), or point STOPLAB_CHROME and STOPLAB_CHROMEDRIVER at them";

/// How long a page may take to show what a test waits for. Generous: the machine may be busy, and a wait
/// that runs out is a failure with a message, not a measurement.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// WebDriver's key codes.
pub const ENTER: &str = "\u{E007}";
pub const CONTROL: &str = "\u{E009}";
pub const ESCAPE: &str = "\u{E00C}";
pub const TAB: &str = "\u{E004}";

/// The key that marks an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn program(env: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env}={} is not a file; {INSTALL}",
            p.display()
        );
        return p;
    }
    on_path(names).unwrap_or_else(|| panic!("{} was not found on PATH; {INSTALL}", names[0]))
}

/// The Chromium and chromedriver these tests use.
pub fn programs() -> (PathBuf, PathBuf) {
    (
        program(
            "STOPLAB_CHROME",
            &[
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ],
        ),
        program("STOPLAB_CHROMEDRIVER", &["chromedriver"]),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// How the browser is started.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub width: u32,
    pub height: u32,
    /// Ask for `prefers-color-scheme: dark`.
    pub dark: bool,
}

impl Window {
    pub const DESKTOP: Self = Self {
        width: 1280,
        height: 900,
        dark: false,
    };
    /// A phone-sized viewport.
    pub const PHONE: Self = Self {
        width: 390,
        height: 844,
        dark: false,
    };
}

/// One WebDriver command: `method` on the session's `path`; the answer's `value`, or a panic with
/// chromedriver's own error.
fn command(method: &str, url: &str, body: Option<Value>) -> Value {
    let req = ureq::request(method, url).timeout(PATIENCE);
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let res = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            panic!(
                "WebDriver {method} {url}: {code} {}: {}",
                v["value"]["error"], v["value"]["message"]
            );
        }
        Err(e) => panic!("WebDriver {method} {url}: {e}"),
    };
    let v: Value = res.into_json().expect("WebDriver answers JSON");
    v["value"].clone()
}

pub struct Browser {
    /// chromedriver's URL of the session.
    session: String,
    driver: Child,
    open: bool,
    _profile: tempfile::TempDir,
}

/// An element of the page.
pub struct Element {
    url: String,
    id: String,
}

impl Element {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        command(method, &format!("{}{path}", self.url), body)
    }

    /// Scrolls the element to the middle of the window (as a person scrolls to what they will click: the
    /// page's Run bar stays at the bottom) and clicks it.
    pub fn click(&self) {
        command(
            "POST",
            &format!("{}/execute/sync", self.session()),
            Some(
                json!({"script": "arguments[0].scrollIntoView({block: 'center'})", "args": [self.reference()]}),
            ),
        );
        self.cmd("POST", "/click", Some(json!({})));
    }

    fn session(&self) -> &str {
        self.url.split("/element/").next().unwrap_or_default()
    }

    pub fn clear(&self) {
        self.cmd("POST", "/clear", Some(json!({})));
    }

    /// Types `text` (WebDriver key codes such as [`ENTER`] allowed) into the element, as a person would.
    pub fn send_keys(&self, text: &str) {
        self.cmd("POST", "/value", Some(json!({ "text": text })));
    }

    /// The rendered text.
    pub fn text(&self) -> String {
        self.cmd("GET", "/text", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn prop(&self, name: &str) -> Value {
        self.cmd("GET", &format!("/property/{name}"), None)
    }

    fn reference(&self) -> Value {
        json!({ ELEMENT: self.id })
    }
}

impl Browser {
    pub fn start(window: Window) -> Self {
        let (chrome, driver_path) = programs();
        let port = free_port();
        let mut driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", driver_path.display()));
        let base = format!("http://127.0.0.1:{port}");
        // Ready when /status says so; a driver that exits instead is reported in its own words.
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = driver.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = driver.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("chromedriver exited ({status}) before it was ready: {err}");
            }
            if let Ok(r) = ureq::get(&format!("{base}/status")).call()
                && r.into_json::<Value>()
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver on port {port} never said it was ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args = vec![
            "--headless=new".to_string(),
            // Root in a container has no user namespace for the sandbox.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--force-device-scale-factor=1".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={},{}", window.width, window.height),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if window.dark {
            args.push("--force-dark-mode".into());
            args.push("--blink-settings=preferredColorScheme=0".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome, "args": args },
        }}});
        let created = ureq::post(&format!("{base}/session"))
            .timeout(PATIENCE)
            .send_json(caps);
        let id = match created {
            Ok(r) => {
                let v: Value = r.into_json().expect("a session");
                v["value"]["sessionId"]
                    .as_str()
                    .expect("a session id")
                    .to_string()
            }
            Err(e) => {
                let why = match e {
                    ureq::Error::Status(_, r) => r.into_string().unwrap_or_default(),
                    other => other.to_string(),
                };
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver could not start {}: {why}", chrome.display());
            }
        };
        let browser = Self {
            session: format!("{base}/session/{id}"),
            driver,
            open: true,
            _profile: profile,
        };
        // A headless window's size is its outer size; make the viewport the size asked for.
        let frame = browser.js(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
            vec![],
        );
        let (w, h): (u32, u32) = serde_json::from_value(frame).unwrap_or((0, 0));
        browser.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": window.width + w, "height": window.height + h})),
        );
        browser
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        command(method, &format!("{}{path}", self.session), body)
    }

    /// Ends the session (the browser exits) and chromedriver.
    pub fn close(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.open) {
            let _ = ureq::delete(&self.session).timeout(PATIENCE).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn element(&self, v: &Value) -> Element {
        Element {
            url: format!(
                "{}/element/{}",
                self.session,
                v[ELEMENT].as_str().expect("an element reference")
            ),
            id: v[ELEMENT].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The first element `selector` matches (a panic naming the selector when none does).
    pub fn css(&self, selector: &str) -> Element {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        );
        let first = v
            .as_array()
            .and_then(|a| a.first())
            .unwrap_or_else(|| panic!("the page has no {selector}"));
        self.element(first)
    }

    pub fn all(&self, selector: &str) -> Vec<Element> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        );
        v.as_array()
            .map(|a| a.iter().map(|e| self.element(e)).collect())
            .unwrap_or_default()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script` with `element` as `arguments[0]`.
    pub fn js_on(&self, element: &Element, script: &str) -> Value {
        self.js(script, vec![element.reference()])
    }

    /// Waits until `script` returns true; `what` names the wait in the failure.
    pub fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.js(script, vec![]) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "the page never reached: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `selector` matches an element, and returns it.
    pub fn wait_for(&self, selector: &str) -> Element {
        self.wait_until(
            &format!("showing {selector}"),
            &format!(
                "return document.querySelector({}) !== null",
                json!(selector)
            ),
        );
        self.css(selector)
    }

    pub fn text(&self, selector: &str) -> String {
        self.css(selector).text()
    }

    /// Chooses the option with `value` in the `<select>` `selector`, by clicking it.
    pub fn select(&self, selector: &str, value: &str) {
        self.css(&format!("{selector} option[value={}]", json!(value)))
            .click();
    }

    /// Saves a screenshot of the viewport under `target/playground/` (the CI artifact) and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("a base64 screenshot"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/playground");
        std::fs::create_dir_all(&dir).expect("target/playground");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also when a test failed half-way.
        self.end();
    }
}

/// Standard base64 (WebDriver's screenshots), padding and line breaks ignored.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
