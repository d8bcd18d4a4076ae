//! SIGINT and SIGTERM (Ctrl-C elsewhere) for the commands that serve until told to stop (`serve`, `play`).

use crate::cli::output::Failure;

/// The signals, caught from the moment of [`Signals::install`]: install them before saying the server is
/// ready, so that a signal sent as soon as it says so finds the handlers.
pub struct Signals {
    runtime: tokio::runtime::Runtime,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Self, Failure> {
        Self::try_install().map_err(|e| Failure::other(format!("installing signal handlers: {e}")))
    }

    fn try_install() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let entered = runtime.enter();
            let interrupt = signal(SignalKind::interrupt())?;
            let terminate = signal(SignalKind::terminate())?;
            drop(entered);
            Ok(Self {
                runtime,
                interrupt,
                terminate,
            })
        }
        #[cfg(not(unix))]
        Ok(Self { runtime })
    }

    /// Blocks until one arrives.
    pub fn wait(mut self) {
        #[cfg(unix)]
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        });
        #[cfg(not(unix))]
        let _ = self.runtime.block_on(tokio::signal::ctrl_c());
    }
}
