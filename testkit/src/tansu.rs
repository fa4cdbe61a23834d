//! A real Kafka-protocol broker for end-to-end tests: tansu with in-memory storage, started
//! as a child process on a free loopback port and killed when dropped.
//!
//! The binary is found at `$TANSU_BIN`, else `~/.cargo/bin/tansu`, else on `PATH`. The test
//! command (`scripts/test.sh`) installs it with
//! `cargo install tansu --features dynostore --locked` when it is missing.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a starting broker may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tansu broker.
#[derive(Debug)]
pub struct TansuBroker {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
}

impl TansuBroker {
    /// Where the tansu binary is, if installed.
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("TANSU_BIN") {
            return Some(PathBuf::from(path));
        }
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
        if let Some(candidate) = cargo_home.map(|home| home.join("bin/tansu"))
            && candidate.is_file()
        {
            return Some(candidate);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("tansu"))
                .find(|candidate| candidate.is_file())
        })
    }

    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let mut broker = Self::not_started()?;
        broker.restart()?;
        Ok(broker)
    }

    /// Picks a free port for a broker without starting it: clients configured with
    /// [`TansuBroker::bootstrap_servers`] find nobody there until [`TansuBroker::restart`].
    pub fn not_started() -> anyhow::Result<Self> {
        let binary = Self::binary().context(
            "tansu is not installed: run scripts/test.sh, or \
             `cargo install tansu --features dynostore --locked`",
        )?;
        Ok(Self {
            child: None,
            port: crate::free_port()?,
            binary,
        })
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (its in-memory data is lost); the port stays reserved for a restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("tansu exited during startup: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("tansu did not accept connections on {address} within {STARTUP_TIMEOUT:?}")
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
