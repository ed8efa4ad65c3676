//! A local `moto_server` (AWS emulator for S3, KMS, …) on a free loopback port, for tests
//! and `residency dev`. It runs under a guardian, so it dies with the process that started
//! it; its log is a temporary file that the guardian removes once moto has exited.
//!
//! moto does not enforce KMS key state (disabled keys still decrypt), so what must hold
//! (residency, crypto-shredding) is enforced and tested in our code, not by the emulator.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::guardian::{GuardedCommand, Guardian, StopSignal};
use crate::{DevstackError, free_loopback_port};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long moto may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const PROGRAM: &str = "moto_server";

/// A running `moto_server` on `127.0.0.1:port`. Stop it with [`MotoServer::stop`];
/// dropping it also stops it (blocking briefly).
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    log_path: PathBuf,
    /// Read handle on the log: it stays readable after the guardian has unlinked the file,
    /// so an early exit can still be explained.
    log: File,
    guardian: Guardian,
}

impl MotoServer {
    /// Finds `moto_server` on `PATH`, starts it on a free loopback port and returns once
    /// it answers HTTP.
    pub async fn start() -> Result<MotoServer, DevstackError> {
        let program = find_on_path(PROGRAM).ok_or(DevstackError::MotoMissing)?;
        let port =
            free_loopback_port().map_err(DevstackError::io("find a free port for", PROGRAM))?;
        let (log, log_path) = tempfile::Builder::new()
            .prefix("residency-moto-")
            .suffix(".log")
            .tempfile()
            .map_err(DevstackError::io(
                "create a log file in",
                std::env::temp_dir(),
            ))?
            .keep()
            .map_err(|err| DevstackError::Io {
                action: "keep log file",
                path: err.file.path().to_path_buf(),
                source: err.error,
            })?;
        let mut command = GuardedCommand::new("residency-moto-guardian", &program);
        command
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stop_signal(StopSignal::Term)
            .log_to(&log_path)?
            .remove_on_exit(&log_path);
        let guardian = command.spawn(&program)?;
        let mut server = MotoServer {
            port,
            log_path,
            log,
            guardian,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, for the SDKs' endpoint override.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where moto logs while it runs (removed when it exits).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of moto's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut log = &self.log;
        let len = log.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = log.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let mut bytes = Vec::new();
        let _ = log.read_to_end(&mut bytes);
        format!(
            "--- {} (tail) ---\n{}",
            self.log_path.display(),
            String::from_utf8_lossy(&bytes)
        )
    }

    /// Stops moto; returns once it has exited.
    pub async fn stop(mut self) -> Result<(), DevstackError> {
        self.guardian.close_lifeline();
        let deadline = Instant::now() + STOP_GRACE;
        let mut killed = false;
        while self.guardian.exited().is_none() {
            if !killed && Instant::now() >= deadline {
                self.kill();
                killed = true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), DevstackError> {
        let started = Instant::now();
        let mut last_error = String::from("not tried yet");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.guardian.exited() {
                return Err(DevstackError::ExitedEarly {
                    what: PROGRAM.into(),
                    status,
                    log: self.log_tail(),
                });
            }
            match probe(self.port).await {
                Ok(()) => return Ok(()),
                Err(err) => last_error = err,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(DevstackError::NotReady {
            what: PROGRAM.into(),
            seconds: READY_TIMEOUT.as_secs(),
            last_error,
            log: self.log_tail(),
        })
    }

    /// moto ignored SIGTERM: kill the guardian's group, and clean up what it would have.
    fn kill(&self) {
        tracing::warn!(port = self.port, "moto_server did not stop; killing it");
        self.guardian.signal_group(Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.log_path);
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if !self.guardian.close_lifeline() {
            return; // stopped already
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.guardian.exited().is_none() {
            if Instant::now() >= deadline {
                self.kill();
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// One HTTP request: any response means the server is up.
async fn probe(port: u16) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("send request: {e}"))?;
        let mut head = [0u8; 5];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if &head == b"HTTP/" {
            Ok(())
        } else {
            Err(format!(
                "unexpected response {:?}",
                String::from_utf8_lossy(&head)
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 2 s".into()))
}

/// The first executable file named `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_message_says_what_to_install() {
        let message = DevstackError::MotoMissing.to_string();
        assert_eq!(
            message,
            r#"moto_server not found: install it with pip install "moto[server]""#
        );
    }

    #[test]
    fn path_lookup_finds_sh_and_not_nonsense() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("residency-no-such-program").is_none());
    }
}
