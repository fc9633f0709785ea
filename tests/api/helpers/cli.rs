//! The built binary's subcommands, run as an operator would: on the test's
//! database, with nothing else from the environment.

use std::process::{Command, Output};

use super::TestData;

const BINARY: &str = env!("CARGO_BIN_EXE_highload");

/// `highload <args>` on the test's database, with `env` set.
pub(crate) fn run_cli(data: &TestData, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .current_dir(data.dir.path())
        .args(args)
        .envs(env.iter().copied());
    match &data.real {
        None => {
            command.env("SQLITE_PATH", data.dir.path().join("highload.db"));
        }
        Some((_, name)) => {
            let base = std::env::var("TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
            let (server, _) = base.rsplit_once('/').expect("a database URL");
            command.env("DATABASE_URL", format!("{server}/{name}"));
        }
    }
    command.output().expect("the binary runs")
}

/// The standard output of a command that succeeded.
pub(crate) fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The value of `label:` in a command's output.
pub(crate) fn field<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} in {output}"))
}
