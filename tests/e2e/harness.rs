//! Starting, stopping and talking to a `unisync` daemon from a test.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "e2e-token";
const BINARY: &str = env!("CARGO_BIN_EXE_unisync");

/// The variable naming the database the PostgreSQL runs of the scenarios use.
pub const TEST_DATABASE_URL: &str = "UNISYNC_TEST_DATABASE_URL";

tokio::task_local! {
    /// The test database's URL while a scenario runs on PostgreSQL ([`on_postgres`]).
    static DATABASE: String;
}

/// Runs `scenario` with every [`Setup::new`] it makes on a PostgreSQL store of its own (a
/// schema of the test database, dropped with the setup); skipped, saying so, when
/// `UNISYNC_TEST_DATABASE_URL` is not set.
pub async fn on_postgres(scenario: impl std::future::Future<Output = ()>) {
    let Ok(url) = std::env::var(TEST_DATABASE_URL) else {
        eprintln!("{TEST_DATABASE_URL} is not set: skipping the PostgreSQL run");
        return;
    };
    DATABASE.scope(url, scenario).await;
}

/// A schema of its own in the test database, so that tests run in parallel; dropped (with
/// everything in it) when the test's setup goes.
pub struct TestSchema {
    url: String,
    pub name: String,
}

impl TestSchema {
    fn create(url: &str) -> TestSchema {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "unisync_e2e_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        run_sql(url, &format!("CREATE SCHEMA {name}"));
        TestSchema {
            url: url.to_string(),
            name,
        }
    }

    /// The database URL with the schema as its search path: what the daemons connect with.
    pub fn url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.url, self.name
        )
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        run_sql(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs `sql` on its own thread and runtime (callable from sync code and from inside the
/// test's runtime alike); answers the rows' first columns as text.
fn run_sql(url: &str, sql: &str) -> Vec<String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|error| panic!("{TEST_DATABASE_URL}: cannot connect: {error}"));
            tokio::spawn(connection);
            client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|error| panic!("{sql}: {error}"))
                .into_iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).unwrap_or_default().to_string())
                    }
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .expect("the SQL thread panicked")
}

/// A scratch folder with a config file for one daemon (or several, on PostgreSQL).
pub struct Setup {
    pub config: PathBuf,
    pub envs: Vec<(String, String)>,
    /// The PostgreSQL schema of a scenario run [`on_postgres`]; dropped after the daemons
    /// (declared before the scratch folder, so it goes first).
    pub schema: Option<TestSchema>,
    /// Holds the scratch folder (config, store) until the test ends.
    scratch: tempfile::TempDir,
}

impl Setup {
    /// A config with `connections` (TOML text of `[connections.*]` tables) and fast retries;
    /// `envs` are the environment variables the connections read their secrets from. Inside
    /// [`on_postgres`] the store is a PostgreSQL schema of its own, with a lease long enough
    /// for the test connections' settle time (twice their 3 s timeout) to be renewed within.
    pub fn new(connections: &str, envs: &[(&str, &str)]) -> Setup {
        let schema = DATABASE.try_with(|url| TestSchema::create(url)).ok();
        let storage = match &schema {
            None => String::new(),
            Some(_) => "engine = \"postgres\"\nurl_env = \"E2E_DATABASE_URL\"\nlease_secs = 12\n"
                .to_string(),
        };
        let database_url = schema.as_ref().map(TestSchema::url);
        let mut all_envs: Vec<(&str, &str)> = envs.to_vec();
        if let Some(url) = &database_url {
            all_envs.push(("E2E_DATABASE_URL", url));
        }
        let mut setup = Setup::with_config(&all_envs, |data| {
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
api_tokens_env = "E2E_API_TOKENS"
max_body_bytes = 4096

[storage]
path = "{data}"
{storage}
[dispatch]
max_attempts = 8
retry_initial_ms = 50
retry_max_ms = 500
recovery_grace_ms = 500

{connections}
"#,
                data = data.display()
            )
        });
        setup.schema = schema;
        setup
    }

    /// A config made by `config_text` from the store's folder; `envs` as for [`Setup::new`]
    /// (the API tokens are in `E2E_API_TOKENS`).
    pub fn with_config(
        envs: &[(&str, &str)],
        config_text: impl FnOnce(&std::path::Path) -> String,
    ) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("unisync.toml");
        std::fs::write(&config, config_text(&dir.path().join("data"))).expect("write config");
        let mut all_envs = vec![("E2E_API_TOKENS".to_string(), TOKEN.to_string())];
        all_envs.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Setup {
            config,
            envs: all_envs,
            schema: None,
            scratch: dir,
        }
    }

    /// `unisync --config CONFIG` with the setup's environment, for a test to add to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BINARY);
        command.arg("--config").arg(&self.config);
        command
            .env_remove("UNISYNC_CONFIG")
            .env("UNISYNC_LOG", "warn");
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Runs a one-shot CLI command; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut command = self.command();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::piped());
        let mut child = command.spawn().expect("spawn unisync");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let output = child.wait_with_output().expect("wait unisync");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs a one-shot CLI command with `--json` that must succeed; answers its JSON.
    pub fn run_json(&self, args: &[&str]) -> Value {
        let args = [args, &["--json"]].concat();
        let (code, out, err) = self.run(&args, None);
        assert_eq!(code, 0, "unisync {args:?} failed: {out} {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("unisync {args:?}: {e}: {out}"))
    }

    /// Registers contacts (JSON values, one per line) with `contacts import -`.
    pub fn import_contacts(&self, contacts: &[Value]) {
        self.import("contacts", contacts);
    }

    /// Registers `kind` (`contacts`, `customers`) from JSON values, one per line, with
    /// `KIND import -`.
    pub fn import(&self, kind: &str, records: &[Value]) {
        let lines: Vec<String> = records.iter().map(Value::to_string).collect();
        let (code, out, err) = self.run(&[kind, "import", "-"], Some(&lines.join("\n")));
        assert_eq!(code, 0, "{kind} import failed: {out} {err}");
    }

    /// A path inside the test's scratch folder.
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// Starts `unisync serve` and waits until it answers.
    pub fn serve(&self) -> Daemon {
        self.serve_with(&[])
    }

    /// Starts `unisync serve ARGS...` and waits until it answers.
    pub fn serve_with(&self, args: &[&str]) -> Daemon {
        self.spawn_serve(args, Stdio::inherit())
    }

    /// Starts `unisync serve` with its log (stderr) written to `log`.
    pub fn serve_logging_to(&self, log: &std::path::Path) -> Daemon {
        self.serve_with_logging_to(&[], log)
    }

    /// Starts `unisync serve ARGS...` with its log (stderr) written to `log`.
    pub fn serve_with_logging_to(&self, args: &[&str], log: &std::path::Path) -> Daemon {
        let file = std::fs::File::create(log).expect("create the log file");
        self.spawn_serve(args, Stdio::from(file))
    }

    fn spawn_serve(&self, args: &[&str], stderr: Stdio) -> Daemon {
        let mut command = self.command();
        command.arg("serve").args(args).stderr(stderr);
        Daemon::start(command)
    }
}

impl Daemon {
    /// Runs `command` (a `unisync ... serve`) and waits until it answers.
    pub fn start(mut command: Command) -> Daemon {
        command.stdout(Stdio::piped());
        let mut child = command.spawn().expect("spawn unisync serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("unisync serve exited before listening")
                .expect("read stdout");
            if let Some(url) = line.strip_prefix("unisync listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child,
            base,
            client: reqwest::Client::new(),
        }
    }
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

/// An HTTP answer: status, headers and JSON body (`Value::Null` when not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request to unisync");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn put_contact(&self, id: &str, body: &Value) -> Answer {
        self.send(
            self.client
                .put(self.url(&format!("/api/v1/unified/contact/{id}")))
                .bearer_auth(TOKEN)
                .json(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path)).bearer_auth(TOKEN))
            .await
    }

    /// `/metrics`' text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response.expect("request to unisync").text().await.unwrap()
    }

    /// `/readyz`'s body.
    pub async fn readiness(&self) -> Value {
        self.send(self.client.get(self.url("/readyz"))).await.body
    }

    pub async fn contact(&self, id: &str) -> Value {
        let answer = self.get(&format!("/api/v1/unified/contact/{id}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["data"].clone()
    }

    pub async fn sync_state(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/unified/contact/{id}/sync"))
            .await
            .body["data"]
            .clone()
    }

    /// Waits (bounded) until the CRM has confirmed every edit of the contact.
    pub async fn wait_synced(&self, id: &str) -> Value {
        wait_for(&format!("contact {id} to sync"), || async {
            let contact = self.contact(id).await;
            (contact["local_was_updated"] == false).then_some(contact)
        })
        .await
    }

    /// Waits (bounded) until the contact has a dead letter; answers its sync state.
    pub async fn wait_dead_letter(&self, id: &str) -> Value {
        wait_for(&format!("a dead letter of contact {id}"), || async {
            let sync = self.sync_state(id).await;
            (sync["open_dead_letters"] == 1).then_some(sync)
        })
        .await
    }

    /// The daemon's process id (part of its node id on a shared store).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the daemon with SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Waits (bounded) for the daemon to exit by itself; answers how it exited.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for("the daemon to exit", || {
            let status = child.try_wait().expect("poll the daemon");
            async move { status }
        })
        .await
    }

    /// Sends SIGHUP, as `systemctl reload` does: the daemon reads its config file again.
    pub fn hang_up(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "kill -HUP");
    }

    /// Sends SIGHUP and waits (bounded) until the daemon has applied (`true`) or refused
    /// (`false`) the config: `/metrics` counts one more reload of that result.
    pub async fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        let before = self.reloads(result).await;
        self.hang_up();
        self.wait_reloads(result, before + 1).await;
    }

    /// Waits (bounded) until `/metrics` counts `count` reloads with `result`.
    pub async fn wait_reloads(&self, result: &str, count: u64) {
        wait_for(&format!("{count} reloads {result}"), || async {
            (self.reloads(result).await >= count).then_some(())
        })
        .await;
    }

    /// Reloads with `result` (`applied`, `refused`) since start, from `/metrics`.
    pub async fn reloads(&self, result: &str) -> u64 {
        let metrics = self.metrics().await;
        let series = format!("unisync_config_reloads_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics: {metrics}"))
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("wait for unisync to stop");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it answers `Some`, for at most 30 seconds (a bound, not a timing
/// assertion: a healthy run takes a fraction of it).
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
