//! The signals the subcommands act on, each set installed by the one subcommand that wants
//! it: Ctrl-C or SIGTERM ends `ccs echo`; `ccs emulate` also writes its ledger on SIGUSR1;
//! `ccs send` stops reading at the first Ctrl-C and quits at the second. A signal nobody
//! listens for keeps its default action.

/// Resolves on Ctrl-C or SIGTERM (`ccs echo`). SIGUSR1 keeps its default action.
pub(crate) async fn interrupted() -> Result<(), String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot watch Ctrl-C: {e}")),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("cannot watch Ctrl-C: {e}"))
    }
}

/// Resolves at the first Ctrl-C; the second one prints `second` on stderr and ends the
/// process at once (`ccs send`: stop reading, but wait for the answers, unless asked twice).
/// SIGTERM keeps its default action.
pub(crate) fn interrupt(second: &'static str) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler: the default (the process ends) stays in force. Keep the sender,
            // so the interrupt branch never fires.
            std::future::pending::<()>().await;
        }
        let _ = tx.send(());
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("{second}");
            std::process::exit(130);
        }
    });
    rx
}

/// A signal `ccs emulate`'s main loop acts on.
pub(crate) enum SignalEvent {
    /// SIGTERM or Ctrl-C: shut down.
    Stop,
    /// SIGUSR1: write the ledger now.
    WriteLedger,
}

/// The signals `ccs emulate` listens for, installed once (so none sent after the startup
/// line is lost, and SIGUSR1 never takes the default action of ending the process).
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the three handlers.
    pub(crate) fn listen() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| {
                signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"))
            };
            Ok(Self {
                term: install(SignalKind::terminate(), "SIGTERM")?,
                interrupt: install(SignalKind::interrupt(), "SIGINT")?,
                usr1: install(SignalKind::user_defined1(), "SIGUSR1")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next signal. Cancel-safe.
    pub(crate) async fn next(&mut self) -> SignalEvent {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => SignalEvent::Stop,
                _ = self.interrupt.recv() => SignalEvent::Stop,
                _ = self.usr1.recv() => SignalEvent::WriteLedger,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            SignalEvent::Stop
        }
    }
}
