//! Build-time facts the binary embeds:
//! - the git commit, for the `highload_build_info` metric: from the
//!   `GIT_COMMIT` environment variable (container builds, which have no
//!   .git), else from git, else "unknown";
//! - the migrations, found in `migrations/<backend>/NNNN_description.sql`
//!   (the names sqlx uses), so that a new file is picked up without editing
//!   a list. This does what `sqlx::migrate!` does without compiling sqlx's
//!   macros and both database drivers a second time for the host.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

fn main() {
    record_git_commit();
    if let Err(err) = embed_migrations(&["sqlite", "postgres"]) {
        panic!("failed to embed the migrations: {err}");
    }
}

fn record_git_commit() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    let commit = std::env::var("GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let output = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HIGHLOAD_GIT_COMMIT={commit}");
}

/// Writes `$OUT_DIR/migrations.rs`: one `&[(version, description, sql)]`
/// constant per backend, in version order.
fn embed_migrations(backends: &[&str]) -> Result<(), String> {
    // A directory is watched whole: a file added, changed or removed reruns this.
    println!("cargo:rerun-if-changed=migrations");
    let root = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let mut code = String::new();
    for backend in backends {
        let dir = Path::new(&root).join("migrations").join(backend);
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_none_or(|ext| ext != "sql") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let (version, description) = stem
                .split_once('_')
                .and_then(|(v, d)| Some((v.parse::<i64>().ok()?, d.replace('_', " "))))
                .ok_or_else(|| format!("{}: name it NNNN_description.sql", path.display()))?;
            found.push((version, description, path));
        }
        found.sort_by_key(|(version, ..)| *version);
        if let Some(pair) = found.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!(
                "{} and {} share a version",
                pair[0].2.display(),
                pair[1].2.display()
            ));
        }
        let _ = writeln!(
            code,
            "pub(crate) const {}: &[(i64, &str, &str)] = &[",
            backend.to_uppercase()
        );
        for (version, description, path) in &found {
            // The text itself, not an `include_str!` of an absolute path:
            // a target directory shared by two checkouts must not embed
            // one checkout's files into the other's binary.
            let sql =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = writeln!(code, "    ({version}, {description:?}, {sql:?}),");
        }
        code.push_str("];\n");
    }
    let out =
        Path::new(&std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("migrations.rs");
    std::fs::write(&out, code).map_err(|e| format!("{}: {e}", out.display()))
}
