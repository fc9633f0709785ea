use std::process::ExitCode;

use highload::config::Config;
use highload::startup::Application;
use highload::{shutdown, telemetry};

fn main() -> ExitCode {
    // Before any thread starts: loading reads `.env` into the environment.
    let config = Config::load();
    if let Err(err) = telemetry::init(&config.log) {
        eprintln!("failed to set up logging: {err:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "highload stopped with an error");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    shutdown::cancel_on_signal(app.shutdown_token());
    app.run_until_stopped().await
}
