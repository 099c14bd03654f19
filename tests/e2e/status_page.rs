//! The operators' status page, driven in a headless Chromium through ChromeDriver's W3C
//! WebDriver protocol: it shows a dead letter with the CRM's words, and its Retry button
//! puts the edit back in the queue until it lands.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use unisync_sandbox::Fault;
use unisync_sandbox::hubspot::HubspotSandbox;

use crate::harness::{Daemon, wait_for};
use crate::world::{ANN_EMAIL, CONTACT, World};
use unisync_sandbox::SandboxCrm;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// WebDriver's key for an element reference in its answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process and one browser session in it.
struct Browser {
    driver: Child,
    client: reqwest::Client,
    session: String,
}

impl Browser {
    /// `None` when the machine has no Chromium: CI installs it (`.ci/run` sets
    /// `UNISYNC_REQUIRE_BROWSER`, and then its absence fails the test).
    async fn start() -> Option<Browser> {
        if !std::path::Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("UNISYNC_REQUIRE_BROWSER").is_none(),
                "{CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: no {CHROMEDRIVER} on this machine");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut browser = Browser {
            driver,
            client: reqwest::Client::new(),
            session: format!("http://127.0.0.1:{port}/session"),
        };
        let status = browser.session.replace("/session", "/status");
        wait_for("chromedriver to answer", || {
            let request = browser.client.get(&status).send();
            async move {
                let body: Value = request.await.ok()?.json().await.ok()?;
                (body["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let created = browser
            .call(
                "",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage"],
                    },
                }}}),
            )
            .await;
        let id = created["sessionId"].as_str().expect("a session id");
        browser.session = format!("{}/{id}", browser.session);
        Some(browser)
    }

    /// POSTs `body` to the session's `path`; answers WebDriver's `value`.
    async fn call(&self, path: &str, body: Value) -> Value {
        let answer: Value = self
            .client
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await
            .expect("reach chromedriver")
            .json()
            .await
            .expect("chromedriver answers JSON");
        assert!(
            answer["value"]["error"].is_null(),
            "WebDriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("/url", json!({"url": url})).await;
    }

    /// The references of the elements `css` selects now.
    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .call("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|element| element[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits (bounded) for `css` to select an element; answers its reference.
    async fn wait_for_element(&self, css: &str) -> String {
        wait_for(&format!("the page to show `{css}`"), || async {
            self.find_all(css).await.into_iter().next()
        })
        .await
    }

    async fn text(&self, element: &str) -> String {
        let answer: Value = self
            .client
            .get(format!("{}/element/{element}/text", self.session))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"].as_str().unwrap_or_default().to_string()
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.call(&format!("/element/{element}/value"), json!({"text": text}))
            .await;
    }

    async fn click(&self, element: &str) {
        self.call(&format!("/element/{element}/click"), json!({}))
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The admin token the daemon made for its run (the config names none).
fn admin_token(world: &World<HubspotSandbox>) -> String {
    let path = world.setup.scratch_path("data").join("admin.token");
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

async fn a_dead_letter(world: &World<HubspotSandbox>, daemon: &Daemon) {
    world.crm.faults().set_standing(Fault::ServerError(503));
    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": ANN_EMAIL, "first_name": "From the page"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    daemon.wait_dead_letter(CONTACT).await;
    world.crm.faults().clear_standing();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_dead_letter_and_retries_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let world = World::<HubspotSandbox>::new().await;
    let daemon = world.setup.serve();
    a_dead_letter(&world, &daemon).await;

    browser.open(&daemon.url("/ui")).await;
    let token = browser.wait_for_element("#token").await;
    browser.type_into(&token, &admin_token(&world)).await;
    let open = browser.wait_for_element("#login button").await;
    browser.click(&open).await;

    let connection = browser
        .wait_for_element("#connections tr[data-connection='hubspot']")
        .await;
    let connection_row = browser.text(&connection).await;
    assert!(connection_row.contains("pushing"), "{connection_row}");
    let letter = browser
        .wait_for_element("#dead-letters tr[data-letter]")
        .await;
    let letter_row = browser.text(&letter).await;
    assert!(letter_row.contains(CONTACT), "{letter_row}");
    assert!(letter_row.contains("retries_exhausted"), "{letter_row}");

    let retry = browser
        .wait_for_element("#dead-letters tr[data-letter] button")
        .await;
    assert_eq!(browser.text(&retry).await, "Retry");
    browser.click(&retry).await;
    wait_for("the page to show no dead letter", || async {
        browser
            .find_all("#dead-letters tr[data-letter]")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    daemon.wait_synced(CONTACT).await;
    assert_eq!(
        world.crm_value("first_name").as_deref(),
        Some("From the page")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_self_contained_and_holds_no_data() {
    let world = World::<HubspotSandbox>::new().await;
    let daemon = world.setup.serve();
    let page = daemon.client.get(daemon.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    assert!(!html.contains(CONTACT), "the page itself carries no data");
    // Its data comes from the admin routes, which refuse a request without the admin token.
    let status = daemon
        .send(daemon.client.get(daemon.url("/api/v1/admin/status")))
        .await;
    assert_eq!(status.status, 401, "{}", status.body);
}
