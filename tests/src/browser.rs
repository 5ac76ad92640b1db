//! End-to-end browser tests: a headless Chromium driven over WebDriver.
//!
//! [`Browser::start`] runs a private `chromedriver` (on a port the kernel picks),
//! which starts Chromium with a fresh profile in a temporary directory. The
//! helpers wait for a condition with a deadline (30 s by default) by polling the
//! page, never by sleeping a fixed time; when one fails, its error names what it
//! waited for and shows the page's URL, the start of its text and the browser
//! console, so a failing test can be diagnosed from its output alone.
//!
//! Dropping a [`Browser`] kills chromedriver and the Chromium processes it
//! started; [`Browser::close`] ends the session cleanly first.
//!
//! The binaries default to Debian's (`apt-get install -y chromium chromium-driver`);
//! `ENSEMBLE_CHROMIUM` and `ENSEMBLE_CHROMEDRIVER` name others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::wd::{TimeoutConfiguration, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a helper waits for its condition unless [`Browser::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromedriver and Chromium may take to start (a loaded machine is slow).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on each request made to describe a failure.
const DIAGNOSTIC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a check may take past the deadline.
const CHECK_GRACE: Duration = Duration::from_secs(2);
/// The pause between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How much of the page's text a failure shows.
const PAGE_TEXT_CHARS: usize = 2000;
/// How many browser console entries a failure shows (the last ones).
const CONSOLE_ENTRIES: usize = 30;
const INSTALL_HINT: &str = "install them with `apt-get install -y chromium chromium-driver`";

/// A headless Chromium session, with its chromedriver and profile.
pub struct Browser {
    /// The WebDriver session, for whatever the helpers don't cover.
    pub client: Client,
    timeout: Duration,
    /// The browser console so far (chromedriver hands each entry out once).
    console: Mutex<Vec<String>>,
    // Fields drop in order: the session, then chromedriver and the Chromium
    // processes under it, then the profile directory they were using.
    driver: Driver,
    profile: tempfile::TempDir,
}

/// Every page of the app with something on it, for checks that hold on
/// every page: a plan (stored, with a suite), a finished run of it (some
/// tests failed, some skipped: `basics` is the path of the `basics` example
/// suite), a cross-platform run (its matrix across two profiles), the
/// machines, suites, runs and one plan's runs. Each path comes with a
/// selector that is there once the page shows its content.
pub async fn app_pages(server: &crate::Server, basics: &str) -> Vec<(String, &'static str)> {
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(basics, "basics-with-a-long-name").await);
    let plan = json!({
        "name": "a plan with a rather long name to see how it wraps on a phone",
        "profiles": [{ "name": "here-and-a-long-profile-name", "labels": { "os": std::env::consts::OS } }],
        "entries": [{ "suite": suite, "profile": "here-and-a-long-profile-name", "params": { "greeting": "hi" } }],
    });
    let stored = server.client().create_plan(&serde_json::from_value(plan.clone()).unwrap()).await.unwrap();
    let run = server.start_run(plan).await;
    server.events(&run).await;
    let here = json!({ "os": std::env::consts::OS });
    let across = server
        .start_run(json!({
            "name": "across",
            "type": "cross-platform",
            "profiles": [{ "name": "one-profile", "labels": here }, { "name": "another-profile", "labels": here }],
            "entries": [{ "suite": suite, "params": { "greeting": "hi" } }],
        }))
        .await;
    server.events(&across).await;
    vec![
        ("/".to_string(), "h1"),
        ("/plans/new".to_string(), "#plan-name"),
        (format!("/plans/{}", stored.id), "#plan-name"),
        ("/machines".to_string(), "h1"),
        ("/suites".to_string(), "h1"),
        ("/runs".to_string(), "h1"),
        (format!("/runs/{run}"), "#run-state"),
        (format!("/runs/{across}"), "#matrix"),
        ("/runs?plan=across".to_string(), "#runs"),
    ]
}

/// Where a screenshot goes: the book's folder (`docs/screenshots/`) when
/// `ENSEMBLE_UPDATE_SCREENSHOTS` is set, else `dir` (taking them still
/// checks they can be taken).
pub fn screenshot(dir: &Path, name: &str) -> std::path::PathBuf {
    if std::env::var_os("ENSEMBLE_UPDATE_SCREENSHOTS").is_some() {
        crate::repo_root().join("docs/screenshots").join(name)
    } else {
        dir.join(name)
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start() -> anyhow::Result<Browser> {
        Self::start_with(&[]).await
    }

    /// [`Browser::start`] with no network: every request but to files goes
    /// to a proxy that is not there.
    pub async fn start_offline() -> anyhow::Result<Browser> {
        Self::start_with(&["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]).await
    }

    /// [`Browser::start`] as a phone: Chromium's mobile emulation of a
    /// `width`×`height` CSS-pixel screen (touch, device pixel ratio 3).
    pub async fn start_phone(width: u32, height: u32) -> anyhow::Result<Browser> {
        Self::launch(&[], Some((width, height)), false).await
    }

    /// [`Browser::start`] with a `width`×`height` window (a desktop screen).
    pub async fn start_sized(width: u32, height: u32) -> anyhow::Result<Browser> {
        Self::launch(&[&format!("--window-size={width},{height}")], None, false).await
    }

    /// [`Browser::start`] keeping a log of every request the page makes
    /// (WebSockets too) for [`Browser::requested_urls`].
    pub async fn start_logging_network() -> anyhow::Result<Browser> {
        Self::launch(&[], None, true).await
    }

    async fn start_with(extra_args: &[&str]) -> anyhow::Result<Browser> {
        Self::launch(extra_args, None, false).await
    }

    async fn launch(
        extra_args: &[&str],
        phone: Option<(u32, u32)>,
        network: bool,
    ) -> anyhow::Result<Browser> {
        let chromium = binary("ENSEMBLE_CHROMIUM", "/usr/bin/chromium")?;
        let chromedriver = binary("ENSEMBLE_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let profile = tempfile::Builder::new()
            .prefix("ensemble-browser-")
            .tempdir()
            .context("creating a profile directory")?;
        let user_data = profile.path().join("chromium");
        std::fs::create_dir(&user_data).with_context(|| format!("creating {}", user_data.display()))?;

        let driver = Driver::start(&chromedriver, profile.path()).await?;
        let mut builder = ClientBuilder::new(HttpConnector::new());
        let mut caps = capabilities(&chromium, &user_data, extra_args);
        caps["goog:chromeOptions"]["prefs"] = json!({
            "download.default_directory": profile.path().join("downloads"),
            "download.prompt_for_download": false,
        });
        if network {
            caps["goog:loggingPrefs"]["performance"] = json!("ALL");
            caps["goog:chromeOptions"]["perfLoggingPrefs"] =
                json!({ "enableNetwork": true, "enablePage": false });
        }
        if let Some((width, height)) = phone {
            caps["goog:chromeOptions"]["mobileEmulation"] = json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 3.0, "touch": true } });
        }
        builder.capabilities(caps);
        let client = match tokio::time::timeout(STARTUP_TIMEOUT, builder.connect(&driver.url())).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                bail!("chromedriver could not start {}: {e}\n{}", chromium.display(), driver.log_tail())
            }
            Err(_) => bail!(
                "{} did not start within {STARTUP_TIMEOUT:?}\n{}",
                chromium.display(),
                driver.log_tail()
            ),
        };
        Ok(Browser { client, timeout: DEFAULT_TIMEOUT, console: Mutex::default(), driver, profile })
    }

    /// The deadline of each helper (30 s unless set).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the deadline of each helper, and the session's page load and script
    /// timeouts to match.
    pub async fn set_timeout(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.timeout = timeout;
        let timeouts = TimeoutConfiguration::new(Some(timeout), Some(timeout), None);
        self.bounded("setting the session's timeouts", self.client.update_timeouts(timeouts)).await
    }

    /// The URL of chromedriver (`http://127.0.0.1:<port>/`).
    pub fn driver_url(&self) -> String {
        self.driver.url()
    }

    /// The temporary directory holding Chromium's profile (`chromium/`) and
    /// chromedriver's log (`chromedriver.log`, with Chromium's own), removed on drop.
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// The bytes of the file the page downloaded as `name` (into the
    /// profile's `downloads/`), once it is whole.
    pub async fn downloaded(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.profile.path().join("downloads").join(name);
        let partial = self.profile.path().join("downloads").join(format!("{name}.crdownload"));
        self.wait_until(&format!("the download {name}"), async |_| {
            Ok((path.is_file() && !partial.exists()).then(|| std::fs::read(&path).ok()).flatten())
        })
        .await
    }

    /// The URLs the page requested since the last call (documents, fetches, scripts,
    /// WebSockets), from a browser made by [`Browser::start_logging_network`].
    pub async fn requested_urls(&self) -> anyhow::Result<Vec<String>> {
        let entries =
            self.bounded("reading the network log", self.client.issue_cmd(BrowserLog("performance"))).await?;
        let mut urls = Vec::new();
        for entry in entries.as_array().into_iter().flatten() {
            let Some(message) = entry.get("message").and_then(Json::as_str) else { continue };
            let Ok(message) = serde_json::from_str::<Json>(message) else { continue };
            let params = &message["message"]["params"];
            let url = match message["message"]["method"].as_str() {
                Some("Network.requestWillBeSent") => params["request"]["url"].as_str(),
                Some("Network.webSocketCreated") => params["url"].as_str(),
                _ => None,
            };
            urls.extend(url.map(str::to_string));
        }
        Ok(urls)
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.bounded(&format!("loading {url}"), self.client.goto(url)).await
    }

    /// The current URL.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        self.bounded("reading the current URL", self.client.current_url()).await.map(String::from)
    }

    /// Waits until an element matches the CSS `selector`, and returns the first one.
    pub async fn wait_css(&self, selector: &str) -> anyhow::Result<Element> {
        self.poll(&format!("an element matching `{selector}`"), async |client| {
            Ok(Ok(client.find(Locator::Css(selector)).await?))
        })
        .await
    }

    /// Waits until no element matches the CSS `selector`.
    pub async fn wait_absent(&self, selector: &str) -> anyhow::Result<()> {
        self.poll(&format!("no element to match `{selector}`"), async |client| {
            let found = client.find_all(Locator::Css(selector)).await?;
            Ok(if found.is_empty() { Ok(()) } else { Err(format!("{} element(s) still match", found.len())) })
        })
        .await
    }

    /// Waits until an element matching the CSS `selector` shows `needle` in its
    /// (rendered, visible) text, and returns that element.
    pub async fn wait_text(&self, selector: &str, needle: &str) -> anyhow::Result<Element> {
        self.poll(
            &format!("an element matching `{selector}` with text containing {needle:?}"),
            async |client| {
                let mut seen = Vec::new();
                for element in client.find_all(Locator::Css(selector)).await? {
                    let text = element.text().await?;
                    if text.contains(needle) {
                        return Ok(Ok(element));
                    }
                    seen.push(truncate(&text, 200));
                }
                Ok(Err(if seen.is_empty() {
                    "no element matches".to_string()
                } else {
                    format!("the matching elements' texts are {seen:?}")
                }))
            },
        )
        .await
    }

    /// Waits for an element matching `selector` and returns its visible text.
    pub async fn text(&self, selector: &str) -> anyhow::Result<String> {
        let element = self.wait_css(selector).await?;
        self.bounded(&format!("reading the text of `{selector}`"), element.text()).await
    }

    /// Waits until the first element matching `selector` is displayed and
    /// enabled, then clicks it.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        self.poll(&format!("clicking `{selector}`"), async |client| {
            let element = match interactable(client, selector).await? {
                Ok(element) => element,
                Err(why) => return Ok(Err(why)),
            };
            element.click().await?;
            Ok(Ok(()))
        })
        .await
    }

    /// Types `keys` into the element matching `selector` as they are (WebDriver
    /// key codes such as `\u{E007}`, Enter, included).
    pub async fn send_keys(&self, selector: &str, keys: &str) -> anyhow::Result<()> {
        self.poll(&format!("typing into `{selector}`"), async |client| {
            let element = match interactable(client, selector).await? {
                Ok(element) => element,
                Err(why) => return Ok(Err(why)),
            };
            element.send_keys(keys).await?;
            Ok(Ok(()))
        })
        .await
    }

    /// Waits for the input matching `selector`, clears it and types `text`; done
    /// when the input's value is `text`.
    pub async fn fill(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        self.poll(&format!("filling `{selector}` with {text:?}"), async |client| {
            let element = match interactable(client, selector).await? {
                Ok(element) => element,
                Err(why) => return Ok(Err(why)),
            };
            element.clear().await?;
            element.send_keys(text).await?;
            let value = element.prop("value").await?.unwrap_or_default();
            Ok(if value == text { Ok(()) } else { Err(format!("its value is {value:?} after typing")) })
        })
        .await
    }

    /// Waits for the `<select>` matching `selector` to have an option whose
    /// value is `value`, and selects it (by clicking it, as a user would).
    pub async fn select_by_value(&self, selector: &str, value: &str) -> anyhow::Result<()> {
        self.poll(&format!("selecting {value:?} in `{selector}`"), async |client| {
            let select = match interactable(client, selector).await? {
                Ok(select) => select,
                Err(why) => return Ok(Err(why)),
            };
            let mut values = Vec::new();
            for option in select.find_all(Locator::Css("option")).await? {
                let option_value = option.prop("value").await?.unwrap_or_default();
                if option_value == value {
                    option.click().await?;
                    let selected = select.prop("value").await?.unwrap_or_default();
                    return Ok(if selected == value {
                        Ok(())
                    } else {
                        Err(format!("its value is {selected:?} after clicking the option"))
                    });
                }
                values.push(option_value);
            }
            Ok(Err(format!("its options' values are {values:?}")))
        })
        .await
    }

    /// Writes a PNG of the viewport to `path`, creating its directory.
    pub async fn screenshot_to(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let png = self.bounded("taking a screenshot", self.client.screenshot()).await?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and
    /// returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Json>) -> anyhow::Result<Json> {
        self.bounded("running a script", self.client.execute(script, args)).await
    }

    /// Runs `script` asynchronously: it calls its last argument with the result.
    pub async fn execute_async(&self, script: &str, args: Vec<Json>) -> anyhow::Result<Json> {
        self.bounded("running an asynchronous script", self.client.execute_async(script, args)).await
    }

    /// Every browser console entry of the session so far, as `LEVEL message`
    /// (messages, uncaught errors, failed requests).
    pub async fn console_log(&self) -> anyhow::Result<Vec<String>> {
        let entries =
            self.bounded("reading the browser console", self.client.issue_cmd(BrowserLog("browser"))).await?;
        Ok(self.keep_console(&entries))
    }

    /// Adds the entries chromedriver returned (it returns each once) to those
    /// seen before, and returns them all.
    fn keep_console(&self, entries: &Json) -> Vec<String> {
        let mut console = self.console.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        console.extend(entries.as_array().into_iter().flatten().map(|entry| {
            let field = |name| entry.get(name).and_then(Json::as_str).unwrap_or_default();
            format!("{} {}", field("level"), field("message"))
        }));
        console.clone()
    }

    /// Polls `check` until it returns `Some`, for at most the deadline.
    /// "No such element" and other transient WebDriver errors count as not yet.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut(&Client) -> Result<Option<T>, CmdError>,
    ) -> anyhow::Result<T> {
        self.poll(what, async |client| Ok(check(client).await?.ok_or_else(|| "not yet".to_string()))).await
    }

    /// Ends the session (Chromium quits), then stops chromedriver.
    pub async fn close(self) -> anyhow::Result<()> {
        let Browser { client, timeout, driver, profile, .. } = self;
        let closed = tokio::time::timeout(timeout, client.close()).await;
        drop(driver);
        drop(profile);
        match closed {
            Ok(result) => result.context("ending the browser session"),
            Err(_) => bail!("ending the browser session took more than {timeout:?}"),
        }
    }

    /// The page's URL, the start of its text and the end of the browser console:
    /// what a failure shows.
    pub async fn diagnostics(&self) -> String {
        async fn bounded<T>(future: impl Future<Output = Result<T, CmdError>>) -> Result<T, String> {
            match tokio::time::timeout(DIAGNOSTIC_TIMEOUT, future).await {
                Ok(result) => result.map_err(|e| format!("<unavailable: {e}>")),
                Err(_) => Err(format!("<unavailable: no answer within {DIAGNOSTIC_TIMEOUT:?}>")),
            }
        }
        let url = bounded(self.client.current_url()).await.map(String::from).unwrap_or_else(|e| e);
        let script = "return document.body ? document.body.innerText : '<the page has no body>'";
        let text = match bounded(self.client.execute(script, Vec::new())).await {
            Ok(Json::String(text)) => truncate(&text, PAGE_TEXT_CHARS),
            Ok(other) => other.to_string(),
            Err(e) => e,
        };
        let (entries, error) = match bounded(self.client.issue_cmd(BrowserLog("browser"))).await {
            Ok(entries) => (self.keep_console(&entries), None),
            Err(e) => (self.keep_console(&Json::Null), Some(e)),
        };
        let skipped = entries.len().saturating_sub(CONSOLE_ENTRIES);
        let mut console = entries[skipped..].iter().map(|entry| format!("    {entry}")).collect::<Vec<_>>();
        if skipped > 0 {
            console.insert(0, format!("    … {skipped} earlier entries"));
        }
        if let Some(error) = error {
            console.push(format!("    {error}"));
        }
        if console.is_empty() {
            console.push("    <empty>".to_string());
        }
        let console = console.join("\n");
        format!(
            "  page URL: {url}\n  page text (first {PAGE_TEXT_CHARS} characters):\n{}\n  browser console:\n{console}",
            indent(&text)
        )
    }

    /// Runs one WebDriver command with the deadline; a failure is described.
    async fn bounded<T>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, CmdError>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failure(what, &format!("failed: {e}")).await),
            Err(_) => Err(self.failure(what, &format!("no answer within {:?}", self.timeout)).await),
        }
    }

    /// Polls `check` until it returns `Ok(Ok(value))` or the deadline passes.
    /// `Ok(Err(why))` means "not yet, because `why`" (shown on a timeout), as do
    /// transient WebDriver errors; other errors fail at once.
    async fn poll<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut(&Client) -> Result<Result<T, String>, CmdError>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.timeout;
        let mut last = "no check finished".to_string();
        loop {
            // A check started just before the deadline may still finish.
            let budget = deadline.saturating_duration_since(Instant::now()).max(CHECK_GRACE);
            match tokio::time::timeout(budget, check(&self.client)).await {
                Ok(Ok(Ok(value))) => return Ok(value),
                Ok(Ok(Err(why))) => last = why,
                Ok(Err(e)) if is_transient(&e) => last = e.to_string(),
                Ok(Err(e)) => {
                    return Err(self.failure(&format!("waiting for {what}"), &format!("{e}")).await);
                }
                Err(_) => last = format!("{last} (then a check did not finish within {budget:?})"),
            }
            let now = Instant::now();
            if now >= deadline {
                let detail = format!("timed out after {:?}; last: {last}", self.timeout);
                return Err(self.failure(&format!("waiting for {what}"), &detail).await);
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    async fn failure(&self, what: &str, detail: &str) -> anyhow::Error {
        anyhow!("browser: {what}: {detail}\n{}", self.diagnostics().await)
    }
}

/// The first element matching `selector` if it is displayed and enabled, or
/// why not.
async fn interactable(client: &Client, selector: &str) -> Result<Result<Element, String>, CmdError> {
    let element = client.find(Locator::Css(selector)).await?;
    Ok(if !element.is_displayed().await? {
        Err("the element is not displayed".to_string())
    } else if !element.is_enabled().await? {
        Err("the element is disabled".to_string())
    } else {
        // To the middle of the screen, as a person would scroll it: at an
        // edge, a sticky bar (the editor's actions) may cover it.
        let arg = serde_json::to_value(&element).map_err(CmdError::Json)?;
        client
            .execute("arguments[0].scrollIntoView({ block: 'center', inline: 'nearest' })", vec![arg])
            .await?;
        Ok(element)
    })
}

/// Errors that a later check may not meet: the page is still changing.
fn is_transient(error: &CmdError) -> bool {
    let CmdError::Standard(error) = error else { return false };
    match error.error {
        ErrorStatus::NoSuchElement
        | ErrorStatus::StaleElementReference
        | ErrorStatus::DetachedShadowRoot
        | ErrorStatus::ElementNotInteractable
        | ErrorStatus::ElementClickIntercepted
        | ErrorStatus::InvalidElementState
        | ErrorStatus::MoveTargetOutOfBounds => true,
        // Chromium answers these while a navigation replaces the document.
        ErrorStatus::UnknownError | ErrorStatus::JavascriptError => {
            let message = error.message.to_lowercase();
            message.contains("execution context") || message.contains("loading status")
        }
        _ => false,
    }
}

/// chromedriver's (non-standard, but Selenium's) command for the browser console.
#[derive(Debug)]
/// A chromedriver log by type (`browser`: the console; `performance`: the
/// DevTools events, of which the network's).
struct BrowserLog(&'static str);

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": self.0 }).to_string()))
    }
}

/// The session's capabilities: headless Chromium with a private profile.
fn capabilities(chromium: &Path, user_data: &Path, extra_args: &[&str]) -> serde_json::Map<String, Json> {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        "--window-size=1400,900",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--user-data-dir={}", user_data.display())])
    .chain(extra_args.iter().map(|a| a.to_string()))
    .collect::<Vec<_>>();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
        // Keeps the console for `console_log` and failures.
        "goog:loggingPrefs": { "browser": "ALL" },
        "timeouts": { "pageLoad": DEFAULT_TIMEOUT.as_millis() as u64, "script": DEFAULT_TIMEOUT.as_millis() as u64 },
    });
    match capabilities {
        Json::Object(capabilities) => capabilities,
        _ => unreachable!("a JSON object"),
    }
}

/// The binary named by `$variable`, or `default`, which must exist.
fn binary(variable: &str, default: &str) -> anyhow::Result<PathBuf> {
    let (named, by) = match std::env::var_os(variable) {
        Some(value) if !value.is_empty() => (PathBuf::from(value), format!("${variable}")),
        _ => (PathBuf::from(default), format!("the default (set ${variable} to use another)")),
    };
    // A bare name is looked up on $PATH.
    let found = if named.components().count() == 1 {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(&named))
            .find(|path| path.is_file())
    } else {
        Some(named.clone()).filter(|path| path.is_file())
    };
    found.ok_or_else(|| {
        anyhow!(
            "browser tests need Chromium and chromedriver: {} ({by}) is missing; {INSTALL_HINT}",
            named.display()
        )
    })
}

/// A running chromedriver. Dropping it kills chromedriver and every process
/// under it: Chromium outlives a killed chromedriver otherwise.
struct Driver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Driver {
    /// Starts chromedriver on a port of the kernel's choosing (`--port=0`; it
    /// reports the port it got), or, should it not report one, on ports picked
    /// here (another process may take one first: then the next one).
    async fn start(binary: &Path, dir: &Path) -> anyhow::Result<Driver> {
        let mut failures = Vec::new();
        for attempt in 0..4 {
            let port = if attempt == 0 { 0 } else { free_port()? };
            match Driver::start_on(binary, dir, port).await {
                Ok(driver) => return Ok(driver),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!("could not start {}:\n{}", binary.display(), failures.join("\n"))
    }

    async fn start_on(binary: &Path, dir: &Path, requested: u16) -> anyhow::Result<Driver> {
        let stderr = dir.join("chromedriver.stderr");
        let stderr_file =
            std::fs::File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let log = dir.join("chromedriver.log");
        let mut child = Command::new(binary)
            .arg(format!("--port={requested}"))
            // A verbose log, with Chromium's own (--enable-chrome-logs): shown
            // when Chromium does not start.
            .arg(format!("--log-path={}", log.display()))
            .arg("--enable-chrome-logs")
            // Chromium's scratch directories (`.org.chromium.Chromium.*`,
            // `scoped_dir*`), which a killed Chromium leaves: in the
            // session's own directory, removed with it.
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}; {INSTALL_HINT}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // From here on, dropping `driver` kills chromedriver.
        let mut driver = Driver { child, port: requested, dir: dir.to_path_buf() };
        let mut lines = BufReader::new(stdout).lines();
        let mut output = Vec::new();
        // "ChromeDriver was started successfully on port 41573." once it listens.
        let started = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, after)) = line.split_once("started successfully") {
                    let reported = after.split_once("port ").and_then(|(_, port)| {
                        port.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u16>().ok()
                    });
                    return Ok(Some(reported));
                }
                output.push(line);
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        match started {
            Ok(Ok(Some(reported))) => match (requested, reported) {
                (0, Some(port)) if port != 0 => driver.port = port,
                (0, _) => bail!("chromedriver did not report the port it got: {output:?}"),
                (_, Some(port)) if port != requested => {
                    bail!("chromedriver is on port {port}, not {requested}")
                }
                _ => {}
            },
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = driver.child.wait().await.map(|s| s.to_string()).unwrap_or_default();
                bail!(
                    "chromedriver exited ({status}) before it was ready; its output: {output:?}\n{}",
                    driver.log_tail()
                );
            }
            Err(_) => bail!("chromedriver was not ready within {STARTUP_TIMEOUT:?}; its output: {output:?}"),
        }
        // Keep reading, so that chromedriver never blocks writing to a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The ends of chromedriver's stderr and log, for errors.
    fn log_tail(&self) -> String {
        let tail = |name: &str, max: usize| {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let start = text.char_indices().rev().nth(max).map_or(0, |(at, _)| at);
            if text.trim().is_empty() { "    <empty>".to_string() } else { indent(&text[start..]) }
        };
        format!(
            "  chromedriver's stderr:\n{}\n  the end of chromedriver's log:\n{}",
            tail("chromedriver.stderr", 1000),
            tail("chromedriver.log", 4000)
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium's processes are under chromedriver, or (once their parent
        // quit) name the profile, which is under `dir`, on their command line.
        let ours = processes::find(self.child.id(), &self.dir.to_string_lossy());
        let _ = self.child.start_kill();
        processes::kill_and_wait(&ours, Duration::from_secs(5));
    }
}

/// The processes under a process, from /proc (Linux).
mod processes {
    use std::collections::{HashMap, HashSet};
    use std::time::{Duration, Instant};

    /// The state and parent of process `pid`, from /proc/<pid>/stat.
    fn stat(pid: u32) -> Option<(char, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (command) state ppid ...": the command may hold spaces and parentheses.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        Some((state, parent))
    }

    /// Every process under `root` (children, their children, …) and every
    /// process whose command line contains `marker`, but this one.
    pub(super) fn find(root: Option<u32>, marker: &str) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut found = HashSet::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, parent)) = stat(pid) {
                children.entry(parent).or_default().push(pid);
            }
            let command = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if !marker.is_empty() && String::from_utf8_lossy(&command).contains(marker) {
                found.insert(pid);
            }
        }
        let mut next = Vec::from_iter(root);
        while let Some(pid) = next.pop() {
            for &child in children.get(&pid).into_iter().flatten() {
                if found.insert(child) {
                    next.push(child);
                }
            }
        }
        found.remove(&std::process::id());
        found.into_iter().collect()
    }

    fn alive(pid: u32) -> bool {
        matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
    }

    /// SIGKILLs `pids` and waits (at most `limit`) until they are gone, so that
    /// nothing writes to the profile directory as it is removed.
    pub(super) fn kill_and_wait(pids: &[u32], limit: Duration) {
        for &pid in pids {
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let deadline = Instant::now() + limit;
        while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The first `max` characters of `text`, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}… [cut at {max} characters]", &text[..end]),
        None => text.to_string(),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}
