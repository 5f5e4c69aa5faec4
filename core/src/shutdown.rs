//! The shutdown signal both binaries stop on.

use std::future::Future;

/// Registers for SIGTERM and SIGINT (Ctrl-C) now and returns a future that resolves when either
/// arrives. Registering eagerly matters: until a handler is registered a SIGTERM takes the
/// default action and kills the process, so one sent just after start-up (an orchestrator that
/// changes its mind, a test) would skip the graceful shutdown. Call it before building anything
/// slow. Needs a running Tokio runtime.
pub fn shutdown_signal(term_message: &'static str) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; {term_message}"),
                _ = interrupt.recv() => tracing::info!("Ctrl-C received; shutting down"),
            },
            (term, interrupt) => {
                tracing::warn!(
                    term = term.err().map(|e| e.to_string()),
                    interrupt = interrupt.err().map(|e| e.to_string()),
                    "cannot listen for shutdown signals; stop the process with SIGKILL"
                );
                std::future::pending::<()>().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIGTERM sent after registration but before anyone awaits the future is not lost (and
    /// does not kill the test process).
    #[tokio::test]
    async fn a_signal_before_the_first_poll_is_kept() {
        let stopped = shutdown_signal("shutting down");
        let pid = std::process::id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), stopped)
            .await
            .expect("the SIGTERM was lost");
    }
}
