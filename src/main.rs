use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use highload::auth::cli::{AccountCommand, ApiKeyCommand};
use highload::config::Config;
use highload::startup::Application;
use highload::{healthcheck, shutdown, telemetry};

/// jemalloc instead of glibc's malloc: with thousands of connections glibc
/// spent a quarter of the CPU in its arenas' locks and free lists, and
/// jemalloc serves more requests at every concurrency the benchmarks try
/// (the README's Performance section), for 2–3 MB more resident memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The C libraries (SQLite, librdkafka, OpenSSL) allocate with glibc's
/// malloc, which gives each thread that allocates an arena of its own (up
/// to eight per core) and keeps what was freed in it: every SQLite reader
/// connection, a thread each, kept its own. Two arenas for all of them: on
/// the embedded stack, peak RSS over writes, a read/write mix and a drain
/// of 95,000 messages 51–52 MB against 56 MB, at the same rates. An
/// explicit `MALLOC_ARENA_MAX` in the environment still decides.
fn limit_c_heap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets
        // a parameter of the allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// What to do instead of serving; with none, the server runs.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list or revoke API keys (AUTH_MODE=api-key) in the configured database
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Create accounts (AUTH_MODE=accounts) in the configured database
    #[command(subcommand)]
    Account(AccountCommand),
    /// Print the OpenAPI document the server serves at /openapi.json (committed as
    /// api/openapi.json)
    Openapi,
}

fn main() -> ExitCode {
    // The image's health check: no server, no configuration beyond the
    // listener's address.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == "healthcheck") {
        return healthcheck::main(args);
    }
    limit_c_heap_arenas();
    // Before any thread starts: loading reads `.env` into the environment.
    let (config, command) = Config::load_with::<Command>();
    match command {
        Some(Command::ApiKey(command)) => {
            return run_command(highload::auth::cli::run(&config.database, command));
        }
        Some(Command::Account(command)) => {
            return run_command(highload::auth::cli::run_account(&config.database, command));
        }
        Some(Command::Openapi) => {
            println!("{}", highload::startup::openapi_document());
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the span exporter sends on it.
    let spans = match runtime.block_on(async { telemetry::init(&config.log, &config.tracing) }) {
        Ok(spans) => spans,
        Err(err) => {
            eprintln!("failed to set up logging and tracing: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, spans));
    // Whatever is still running after the drain (a client library waiting
    // for a server that is gone) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "highload stopped with an error");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, spans: telemetry::Tracing) -> anyhow::Result<()> {
    let app = Application::build(config).await?.with_tracing(spans);
    shutdown::cancel_on_signal(app.shutdown_token());
    app.run_until_stopped().await
}

/// `highload api-key …` or `highload account …`: prints its result, or the
/// error on standard error.
fn run_command(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
