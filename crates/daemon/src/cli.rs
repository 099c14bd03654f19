//! The command line. Exit codes: 0 success; 1 the work ran but some items failed; 2 bad
//! usage, bad config or bad input.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::de::DeserializeOwned;
use unisync_core::Secret;

use crate::backfill::{self, BackfillOptions};
use crate::config::{Config, StorageEngine};
use crate::connections::{Connections, build_adapter, check_lease, settle_time};
use crate::http::error::{ErrorBody, RefusalWithReport};
use crate::store::{ReplayAttempt, Store, StoreError};
use crate::{ops, providers, pull, render, serve};

#[derive(Parser)]
#[command(
    name = "unisync",
    version,
    about = "Pushes edits of unified contacts into the CRMs they came from"
)]
struct Cli {
    /// Config file [default: $UNISYNC_CONFIG, else config/unisync.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print what `status`, `dead-letters` and `contacts pull` answer as JSON (times in
    /// RFC 3339 and in the machine's zone) instead of tables for people
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: HTTP API and dispatcher, until SIGTERM/SIGINT
    Serve {
        /// Also start the built-in sandbox CRMs, point the connections at them and seed demo contacts
        #[arg(long)]
        sandbox: bool,
    },
    /// One-shot: push every edit of a JSONL file, show progress, print a summary, exit
    Backfill {
        /// The edits (JSONL: unified_contact_id, optional edit_id, and the update body), or - for stdin
        #[arg(long)]
        input: String,
        /// Check every line, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also write the summary and every failure as JSON here
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Register unified contacts or pull them from a CRM
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Register unified customers (companies, accounts)
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Queue depth, retries waiting, in flight and dead letters, per connection
    Status,
    /// Inspect and replay edits the CRM refused
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The store's upkeep
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run only the sandbox CRMs, for adapter work and demos
    Sandbox {
        /// Where each provider's fake listens, from its `--<system>` flag (see
        /// [`sandbox_flags`]).
        #[arg(skip)]
        listen: Vec<(&'static str, SocketAddr)>,
    },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Register unified contacts from JSONL (FILE or - for stdin), upserting by id
    Import { file: String },
    /// Page through a connection's CRM contacts and register each
    Pull {
        #[arg(long)]
        connection: String,
    },
}

#[derive(Subcommand)]
enum CustomersCommand {
    /// Register unified customers from JSONL (FILE or - for stdin), upserting by id
    Import { file: String },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Every dead letter, of kind `refused` (by the CRM) or `conflict` (held: a person
    /// changed the fields in the CRM; each shows base, crm and ours)
    List,
    Show {
        id: String,
    },
    /// Replay one dead letter, or all of them with --all; a conflict letter writes ours over
    /// the CRM's value
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Forget a dead letter; the record's values go back to the CRM's (a conflict letter's:
    /// the CRM's value it shows)
    Drop {
        id: String,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// With the daemon stopped: prune by the retention settings, then rewrite the sled store
    /// into fresh files that hold only live records, giving the rest of the disk back
    Compact,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate config and secrets; print the effective config, secrets redacted
    Check,
}

/// A failed command: its message and exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::runtime(error.to_string())
    }
}

/// An input without a record is bad input, as the daemon's 400 `empty_import` is.
impl From<ops::EmptyImport> for Failure {
    fn from(empty: ops::EmptyImport) -> Self {
        Failure::usage(empty.to_string())
    }
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// The first port `unisync sandbox` gives a fake by default; each provider of the registry
/// takes the next (HubSpot 8091, Salesforce 8092, ...).
const FIRST_SANDBOX_PORT: u16 = 8091;

/// The `unisync sandbox` flags: one `--<system> ADDR` per registered provider with a fake.
pub fn sandbox_flags() -> Vec<&'static str> {
    providers::PROVIDERS
        .iter()
        .filter(|provider| provider.sandbox.is_some())
        .map(|provider| provider.system())
        .collect()
}

/// The default address of the `n`th fake.
fn default_sandbox_addr(n: usize) -> SocketAddr {
    let port = FIRST_SANDBOX_PORT.saturating_add(u16::try_from(n).unwrap_or(u16::MAX));
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The command line with the `unisync sandbox` flags of the registered providers.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("sandbox", |sandbox| {
        sandbox_flags()
            .into_iter()
            .enumerate()
            .fold(sandbox, |sandbox, (n, system)| {
                sandbox.arg(
                    clap::Arg::new(system)
                        .long(system)
                        .value_name("ADDR")
                        .value_parser(clap::value_parser!(SocketAddr))
                        .help(format!(
                            "Where the {system} fake listens [default: {}]",
                            default_sandbox_addr(n)
                        )),
                )
            })
    })
}

/// Parses the command line (exiting with clap's message on bad usage).
fn parse() -> Cli {
    let matches = command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if let (Command::Sandbox { listen }, Some(flags)) =
        (&mut cli.command, matches.subcommand_matches("sandbox"))
    {
        *listen = sandbox_flags()
            .into_iter()
            .enumerate()
            .map(|(n, system)| {
                let addr = flags.get_one::<SocketAddr>(system).copied();
                (system, addr.unwrap_or_else(|| default_sandbox_addr(n)))
            })
            .collect();
    }
    cli
}

pub fn main() -> ExitCode {
    let cli = parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("unisync: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("UNISYNC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("UNISYNC_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let config_path = Config::resolve_path(cli.config);
    let output = Output { json: cli.json };
    if let Command::Sandbox { listen } = cli.command {
        return run_sandboxes(&listen).await;
    }
    let config = Config::load(&config_path).map_err(|e| Failure::usage(e.to_string()))?;
    match cli.command {
        Command::Serve { sandbox } => serve::serve(&config_path, config, sandbox)
            .await
            .map(|()| 0)
            .map_err(|error| match error {
                serve::ServeError::Start(message) => Failure::usage(message),
                serve::ServeError::Unavailable(message) => Failure::runtime(message),
                serve::ServeError::StoreFailed(message) => Failure::runtime(message),
            }),
        Command::Config(ConfigCommand::Check) => config_check(&config).await,
        Command::Store(StoreCommand::Compact) => compact_command(&config).await,
        Command::Backfill {
            input,
            dry_run,
            report,
        } => {
            let options = BackfillOptions {
                input,
                dry_run,
                report,
            };
            backfill_command(&config, &options).await
        }
        Command::Contacts(ContactsCommand::Import { file }) => {
            let settings = config
                .connections()
                .map_err(|e| Failure::usage(e.to_string()))?;
            import(&config, &file, "contacts", async |store, lines| {
                // Each line is routed, and its id normalised, as the daemon would.
                let connections =
                    Connections::build(settings.clone(), store).map_err(Failure::usage)?;
                let imported = ops::import(store, ops::Import::Contacts(&connections), lines);
                Ok(imported.await??)
            })
            .await
        }
        Command::Customers(CustomersCommand::Import { file }) => {
            import(&config, &file, "customers", async |store, lines| {
                let imported = ops::import(store, ops::Import::Customers, lines);
                Ok(imported.await??)
            })
            .await
        }
        Command::Contacts(ContactsCommand::Pull { connection }) => {
            pull_command(&config, &connection, output).await
        }
        Command::Status => {
            let names: Vec<String> = config.connections.keys().cloned().collect();
            let settings = config
                .connections()
                .map_err(|e| Failure::usage(e.to_string()))?;
            // Said from the config, so an idle store (no daemon) says it too.
            let disabled: Vec<String> = settings
                .iter()
                .filter(|connection| !connection.enabled)
                .map(|connection| connection.name.clone())
                .collect();
            let status = with_store(
                &config,
                async |store| {
                    let in_flight = store.in_flight_counts().await?;
                    let mut status =
                        ops::status(store, &names, &in_flight, disabled.clone()).await?;
                    // On a shared store, the daemons' leaders report what only they know.
                    if store.lease_ms().is_some() {
                        crate::dispatcher::leadership::add_reports(store, &mut status).await?;
                    }
                    Ok::<_, StoreError>(status)
                },
                ("GET", "status"),
            )
            .await?;
            output.show(&status, render::status);
            Ok(0)
        }
        Command::DeadLetters(command) => dead_letters(&config, command, output).await,
        Command::Sandbox { .. } => unreachable!("handled above"),
    }
}

/// How a command shows what it answers: a table for people, or JSON with `--json`.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn show<T: serde::Serialize>(self, value: &T, for_people: impl FnOnce(&T) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            print!("{}", for_people(value));
        }
    }
}

/// `unisync store compact`: sled only, and only with no daemon holding the store.
async fn compact_command(config: &Config) -> Result<u8, Failure> {
    let storage = &config.storage;
    if storage.engine != StorageEngine::Sled {
        return Err(Failure::usage(
            "store compact is for the sled engine; PostgreSQL gives space back with its own VACUUM",
        ));
    }
    let compacted = crate::store::compact(&storage.path, storage.cache_mib, &storage.retention())
        .await
        .map_err(|error| match error {
            StoreError::Locked(_) => Failure::runtime(format!(
                "{error}: stop the daemon first, compaction needs the store to itself"
            )),
            other => other.into(),
        })?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "store compacted: {:.1} MiB -> {:.1} MiB; pruned {} dead letters and {} edit ids past their retention",
        mib(compacted.bytes_before),
        mib(compacted.bytes_after),
        compacted.pruned.dead_letters,
        compacted.pruned.edit_ids
    );
    Ok(0)
}

async fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open_configured(&config.storage).await
}

/// Runs `local` on the store, or — when the daemon holds the store — asks the daemon's admin
/// API (`method`, path under `/api/v1/admin/`).
async fn with_store<T: DeserializeOwned, E: Into<Failure>>(
    config: &Config,
    local: impl AsyncFnOnce(&Store) -> Result<T, E>,
    remote: (&str, &str),
) -> Result<T, Failure> {
    with_store_body(config, local, remote, None).await
}

async fn with_store_body<T: DeserializeOwned, E: Into<Failure>>(
    config: &Config,
    local: impl AsyncFnOnce(&Store) -> Result<T, E>,
    (method, path): (&str, &str),
    body: Option<Vec<u8>>,
) -> Result<T, Failure> {
    match open_store(config).await {
        Ok(store) => {
            let value = local(&store).await.map_err(Into::into)?;
            store
                .flush()
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
            Ok(value)
        }
        Err(StoreError::Locked(_)) => ask_daemon(config, method, path, body).await,
        Err(error) => Err(Failure::runtime(error.to_string())),
    }
}

async fn ask_daemon<T: DeserializeOwned>(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<T, Failure> {
    let token = admin_token(config)?;
    let addr = std::fs::read_to_string(serve::daemon_addr_file(&config.storage.path))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| config.server.listen.to_string());
    let url = format!("http://{addr}/api/v1/admin/{path}");
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut request = client.request(method, &url).bearer_auth(token.expose());
    if let Some(body) = body {
        request = request.body(body);
    }
    let unreachable = |e: reqwest::Error| {
        Failure::runtime(format!(
            "the store is locked by another process, and the daemon at {url} does not answer ({e})"
        ))
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        // A refusal with the report of what was done all the same (an import's refused
        // lines): shown as the local path shows it, the failed items making the exit code.
        if let Ok(refusal) = serde_json::from_slice::<RefusalWithReport<T>>(&bytes) {
            return Ok(refusal.report);
        }
        return Err(daemon_refusal(status, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::runtime(format!(
            "the daemon at {url} answered {status} with a body the CLI cannot read ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })
}

/// The daemon's refusal as the CLI shows it: the status, the API's error code and message
/// and each field's reason, or the body's first words when it is not the API's error shape.
/// A refusal of what the request carried (the operator's input) exits 2, as the same input
/// refused without a daemon does; any other exits 1.
fn daemon_refusal(status: reqwest::StatusCode, body: &[u8]) -> Failure {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => {
            let mut message = format!(
                "the daemon refused ({status}): {}: {}",
                error.code, error.message
            );
            for detail in &error.details {
                message.push_str(&format!(
                    "\n  {}: {}: {}",
                    detail.field, detail.code, detail.message
                ));
            }
            message
        }
        Err(_) => format!(
            "the daemon refused ({status}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    };
    use reqwest::StatusCode;
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => Failure::usage(message),
        _ => Failure::runtime(message),
    }
}

/// The token the CLI shows the daemon's admin routes: the first configured admin token, else
/// the one the daemon made for this run (`<storage.path>/admin.token`, readable by the
/// daemon's user only).
fn admin_token(config: &Config) -> Result<Secret, Failure> {
    let configured = config
        .admin_tokens()
        .map_err(|e| Failure::usage(format!("the daemon holds the store; to ask it: {e}")))?;
    if let Some(token) = configured.into_iter().next() {
        return Ok(token);
    }
    let file = serve::admin_token_file(&config.storage.path);
    std::fs::read_to_string(&file)
        .map(|text| Secret::new(text.trim()))
        .map_err(|e| {
            Failure::runtime(format!(
                "the daemon holds the store; to ask it, set server.admin_tokens_env or admin_tokens_file, or run as the daemon's user (cannot read {}: {e})",
                file.display()
            ))
        })
}

fn read_input(file: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes))
    }
    .map_err(|e| Failure::usage(format!("cannot read {file}: {e}")))?;
    Ok(bytes)
}

async fn import(
    config: &Config,
    file: &str,
    what: &str,
    run: impl AsyncFn(&Store, &[u8]) -> Result<ops::ImportReport, Failure>,
) -> Result<u8, Failure> {
    let bytes = read_input(file)?;
    let report: ops::ImportReport = with_store_body(
        config,
        async |store| run(store, bytes.as_slice()).await,
        ("POST", what),
        Some(bytes.clone()),
    )
    .await?;
    for failure in &report.failed {
        eprintln!("line {}: {}", failure.line, failure.message);
    }
    println!(
        "{what}: {} imported, {} failed",
        report.imported,
        report.failed.len()
    );
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}

async fn backfill_command(config: &Config, options: &BackfillOptions) -> Result<u8, Failure> {
    let input = read_input(&options.input)?;
    let report = backfill::backfill(config, &input, options)
        .await
        .map_err(Failure::runtime)?;
    for failure in &report.invalid {
        eprintln!("line {}: {}", failure.line, failure.message);
    }
    for letter in &report.dead_letters {
        eprintln!(
            "dead letter {} (contact {}): {} {}",
            letter.id, letter.contact_id, letter.error.code, letter.error.message
        );
    }
    for (connection, pause) in &report.paused_connections {
        eprintln!(
            "connection {connection} paused ({}: {} {}; until {}): its edits stay queued for `unisync serve`",
            pause.reason.name(),
            pause.code,
            pause.message,
            pause.until_local
        );
    }
    if options.dry_run {
        println!(
            "dry run: {} lines, {} valid edits for {} contacts, {} invalid, {} already applied",
            report.lines,
            report.accepted,
            report.contacts,
            report.invalid.len(),
            report.duplicates_skipped
        );
    } else {
        println!(
            "backfill: {} lines, {} edits accepted for {} contacts ({} invalid, {} already applied); {} landed, {} dead letters, {} left queued; {:.1} s ({:.1} s accepting, {:.1} s pushing), {:.0} contacts/s, {} pushes",
            report.lines,
            report.accepted,
            report.contacts,
            report.invalid.len(),
            report.duplicates_skipped,
            report.landed,
            report.dead_letters.len(),
            report.left_queued,
            report.elapsed_ms as f64 / 1000.0,
            report.accept_ms as f64 / 1000.0,
            report.push_ms as f64 / 1000.0,
            report.contacts_per_second,
            report.push_calls
        );
    }
    if let Some(path) = &options.report {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, json)
            .map_err(|e| Failure::runtime(format!("writing {}: {e}", path.display())))?;
    }
    Ok(if report.failed() { 1 } else { 0 })
}

async fn pull_command(config: &Config, name: &str, output: Output) -> Result<u8, Failure> {
    let report: pull::PullReport = match open_store(config).await {
        Ok(store) => {
            let settings = config
                .connections()
                .map_err(|e| Failure::usage(e.to_string()))?;
            let connections = Connections::build(settings, &store).map_err(Failure::usage)?;
            let connection = connections.get(name).ok_or_else(|| {
                Failure::usage(format!("no connection named `{name}` in the config"))
            })?;
            pull::pull_contacts(&store, connection)
                .await
                .map_err(Failure::runtime)?
        }
        Err(StoreError::Locked(_)) => {
            ask_daemon(config, "POST", &format!("contacts/pull/{name}"), None).await?
        }
        Err(error) => return Err(Failure::runtime(error.to_string())),
    };
    for reason in &report.refused {
        eprintln!("refused {reason}");
    }
    output.show(&report, |report| {
        format!(
            "{name}: {} registered, {} updated, {} refused, {} pages\n",
            report.registered,
            report.updated,
            report.refused.len(),
            report.pages
        )
    });
    Ok(if report.refused.is_empty() { 0 } else { 1 })
}

async fn dead_letters(
    config: &Config,
    command: DeadLettersCommand,
    output: Output,
) -> Result<u8, Failure> {
    let replay = match command {
        DeadLettersCommand::List => {
            let list = with_store(config, ops::list_dead_letters, ("GET", "dead-letters")).await?;
            output.show(&list, render::dead_letters);
            return Ok(0);
        }
        DeadLettersCommand::Show { id } => {
            let path = format!("dead-letters/{id}");
            let letter = with_store(
                config,
                async |store| match store.dead_letter_by_id(&id).await? {
                    Some(letter) => Ok(ops::DeadLetterView::new(&letter)),
                    None => Err(StoreError::UnknownDeadLetter(id.clone())),
                },
                ("GET", &path),
            )
            .await?;
            output.show(&letter, render::dead_letter);
            return Ok(0);
        }
        DeadLettersCommand::Retry { id: Some(id), .. } => {
            let path = format!("dead-letters/{id}/retry");
            with_store(
                config,
                async |store| {
                    let replay = store.replay_dead_letter(&id).await?;
                    Ok::<_, StoreError>(ops::ReplayReport::new(&[ReplayAttempt {
                        letter_id: id.clone(),
                        outcome: Ok(replay),
                    }]))
                },
                ("POST", &path),
            )
            .await?
        }
        DeadLettersCommand::Retry {
            id: None,
            all: true,
        } => {
            with_store(
                config,
                async |store| {
                    let attempts = store.replay_all_dead_letters().await?;
                    Ok::<_, StoreError>(ops::ReplayReport::new(&attempts))
                },
                ("POST", "dead-letters/retry-all"),
            )
            .await?
        }
        DeadLettersCommand::Retry {
            id: None,
            all: false,
        } => {
            return Err(Failure::usage("dead-letters retry: give an ID or --all"));
        }
        DeadLettersCommand::Drop { id } => {
            let path = format!("dead-letters/{id}");
            let dropped = with_store(
                config,
                async |store| {
                    let letter = store.drop_dead_letter(&id).await?;
                    Ok::<_, StoreError>(ops::DropReport {
                        dropped: vec![letter.id],
                    })
                },
                ("DELETE", &path),
            )
            .await?;
            output.show(&dropped, |dropped| {
                format!("dropped: {}\n", dropped.dropped.join(", "))
            });
            return Ok(0);
        }
    };
    output.show(&replay, render::replay);
    // A letter that could not be replayed is an item that failed.
    Ok(if replay.failed.is_empty() { 0 } else { 1 })
}

async fn config_check(config: &Config) -> Result<u8, Failure> {
    let tokens = config
        .api_tokens()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let settings = config
        .connections()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let credentials: Arc<dyn unisync_core::CredentialStore> = Arc::new(NoCredentials);
    let mut settle_times = Vec::new();
    for connection in &settings {
        let adapter = build_adapter(connection, credentials.clone()).map_err(Failure::usage)?;
        settle_times.push(settle_time(connection, adapter.as_ref()));
    }
    println!(
        "[server]\nlisten = \"{}\"\napi_tokens = {} token(s), redacted",
        config.server.listen,
        tokens.len()
    );
    let admin_tokens = config
        .admin_tokens()
        .map_err(|e| Failure::usage(e.to_string()))?;
    match (admin_tokens.len(), config.storage.engine) {
        (0, StorageEngine::Sled) => {
            println!("admin_tokens = none: one made per run, in <storage.path>/admin.token")
        }
        // The CLI works on the database itself: no daemon's admin token is written anywhere.
        (0, StorageEngine::Postgres) => println!(
            "admin_tokens = none: one made per run, kept by the daemon (the CLI works on the database)"
        ),
        (count, _) => println!("admin_tokens = {count} token(s), redacted"),
    }
    let server = &config.server;
    println!(
        "max_body_bytes = {}\nheader_timeout_ms = {}\nbody_timeout_ms = {}\nidle_timeout_ms = {}\nmax_connections = {}",
        server.max_body_bytes,
        server.header_timeout_ms,
        server.body_timeout_ms,
        server.idle_timeout_ms,
        server.max_connections
    );
    let storage = &config.storage;
    let database = config
        .storage
        .postgres_url()
        .map_err(|e| Failure::usage(e.to_string()))?;
    match &database {
        None => println!(
            "\n[storage]\nengine = \"sled\"\npath = \"{}\"\ncache_mib = {}",
            storage.path.display(),
            storage.cache_mib
        ),
        Some(url) => {
            let lease = std::time::Duration::from_secs(storage.lease_secs);
            for (connection, settle) in settings.iter().zip(&settle_times) {
                check_lease(connection, *settle, lease).map_err(Failure::usage)?;
            }
            println!(
                "\n[storage]\nengine = \"postgres\"\nurl = \"{}\"\npool_size = {}\nlease_secs = {}",
                crate::config::redacted_url(url),
                storage.pool_size,
                storage.lease_secs
            );
            // Read without migrating: `config check` changes nothing; the daemon migrates.
            let (found, latest) = Store::postgres_schema_version(url)
                .await
                .map_err(|e| Failure::runtime(format!("storage: {e}")))?;
            match found {
                0 => println!(
                    "# the database answers; no store yet: the first daemon creates it (schema version {latest})"
                ),
                found if found < latest => println!(
                    "# the database answers; schema version {found}, migrated to {latest} when a daemon starts"
                ),
                found if found > latest => {
                    return Err(Failure::usage(format!(
                        "storage: the database is at schema version {found}, newer than this unisync's ({latest})"
                    )));
                }
                found => println!("# the database answers; schema version {found}"),
            }
        }
    }
    for (connection, settle) in settings.iter().zip(settle_times) {
        println!(
            "\n[connections.{}]\nsystem = \"{}\"",
            connection.name, connection.system
        );
        println!(
            "max_attempts = {}\nconcurrency = {}\nretry_initial_ms = {}\nretry_max_ms = {}\nsettle_ms = {}",
            connection.dispatch.max_attempts,
            connection.dispatch.concurrency,
            connection.dispatch.retry_initial_ms,
            connection.dispatch.retry_max_ms,
            settle.as_millis()
        );
        for (key, value) in &connection.provider.settings {
            println!("{key} = {value}");
        }
    }
    warn_of_unconfigured_connections(config).await;
    println!("\nconfig ok");
    Ok(0)
}

/// Names every connection the store still holds edits for that the config no longer has
/// (renamed or removed): those edits are kept but never pushed. Quiet when there is no store
/// yet or it cannot be read (`config check` checks the config, not the store).
async fn warn_of_unconfigured_connections(config: &Config) {
    let has_store = match config.storage.engine {
        StorageEngine::Sled => config.storage.path.exists(),
        // Opening a store migrates it: only one at the version this unisync writes is
        // opened (a migration is left to the daemon).
        StorageEngine::Postgres => match config.storage.postgres_url() {
            Ok(Some(url)) => Store::postgres_schema_version(&url)
                .await
                .is_ok_and(|(found, latest)| found == latest),
            _ => false,
        },
    };
    if !has_store {
        return;
    }
    let names: Vec<String> = config.connections.keys().cloned().collect();
    let status = with_store(
        config,
        async |store| {
            let in_flight = store.in_flight_counts().await?;
            ops::status(store, &names, &in_flight, Vec::new()).await
        },
        ("GET", "status"),
    )
    .await;
    let Ok(status) = status else {
        return;
    };
    for name in &status.unconfigured {
        let counts = status.connections.get(name).cloned().unwrap_or_default();
        println!(
            "\nwarning: the store holds edits for connection `{name}`, which the config does not have (renamed or removed?): {} queued, {} waiting for a retry, {} dead letters. They are kept and pushed once a connection named `{name}` is configured again.",
            counts.ready, counts.retry_waiting, counts.dead_letters
        );
    }
}

/// A credential store that keeps nothing, for building adapters only to check their config.
struct NoCredentials;

impl unisync_core::CredentialStore for NoCredentials {
    fn load(&self, _key: &str) -> Option<String> {
        None
    }
    fn save(&self, _key: &str, _value: &str) -> Result<(), String> {
        Ok(())
    }
}

async fn run_sandboxes(listen: &[(&'static str, SocketAddr)]) -> Result<u8, Failure> {
    let mut running = Vec::new();
    for &(system, addr) in listen {
        let sandbox = providers::start_sandbox(system, addr, 25)
            .await
            .map_err(|e| Failure::usage(format!("{system} sandbox on {addr}: {e}")))?
            .expect("a sandbox flag names a provider with a fake");
        println!("{system} sandbox on http://{}", sandbox.addr());
        for (key, value) in sandbox.connection_secrets() {
            println!("  {key}: {value}");
        }
        running.push(sandbox);
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command the CLI takes, as the README names it: the subcommand path, without
    /// arguments (`contacts import`, `dead-letters retry`).
    fn leaf_commands(command: &clap::Command, path: &str) -> Vec<String> {
        command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
            .flat_map(|sub| {
                let path = format!("{path}{} ", sub.get_name());
                if sub.has_subcommands() {
                    leaf_commands(sub, &path)
                } else {
                    vec![path.trim_end().to_string()]
                }
            })
            .collect()
    }

    /// The README's command table names each command the CLI takes, and no other. A row
    /// names one command (`unisync contacts import FILE\|-`) or several of one group
    /// (`unisync dead-letters list\|show ID\|retry ID`: each alternative after the first
    /// is a sibling of the first).
    #[test]
    fn the_readme_command_table_matches_the_cli() {
        // A command's word, not an argument (`FILE`, `--input`, `[--sandbox]`, `-`).
        let is_word = |word: &&str| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        };
        let mut listed: Vec<String> = Vec::new();
        for row in crate::http::testing::readme_table("command") {
            let row = row
                .strip_prefix("unisync ")
                .expect("a row names a unisync command");
            let mut alternatives = row.split("\\|");
            let first: Vec<&str> = alternatives
                .next()
                .unwrap_or_default()
                .split(' ')
                .take_while(is_word)
                .collect();
            let group = first[..first.len() - 1].join(" ");
            listed.push(first.join(" "));
            if first.len() > 1 {
                for alternative in alternatives {
                    if let Some(sibling) = alternative.split(' ').next().filter(is_word) {
                        listed.push(format!("{group} {sibling}"));
                    }
                }
            }
        }
        listed.sort();
        listed.dedup();
        let mut commands = leaf_commands(&command(), "");
        commands.sort();
        assert_eq!(listed, commands);
    }
}
