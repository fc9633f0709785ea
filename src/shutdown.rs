//! Turns SIGTERM or Ctrl-C into a cancelled token; the application drains
//! in order when it sees it (see `startup`). A second signal exits at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or Ctrl-C; exits on the second.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let name = signal().await;
        tracing::info!(signal = name, "shutdown requested; draining");
        token.cancel();
        let name = signal().await;
        tracing::warn!(signal = name, "second signal; exiting without draining");
        std::process::exit(130);
    });
}

async fn signal() -> &'static str {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = terminate => "SIGTERM",
    }
}
