//! stdio client: spawns the server command, speaks newline-delimited
//! JSON-RPC on its stdin/stdout. Sequential calls for the handshake and the
//! memory benchmark; the pipelined load loop lives in `load.rs`.

use std::process::Stdio;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::rpc::{self, Class};

pub struct StdioProc {
    pub child: Child,
    pub w: BufWriter<ChildStdin>,
    pub r: BufReader<ChildStdout>,
    pub line: Vec<u8>,
}

/// `sh -c "exec CMD"`: the shell's word splitting and quoting, and the PID
/// we hold is the server's own (RSS, signals).
pub fn shell(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!("exec {cmd}"));
    c
}

impl StdioProc {
    pub fn spawn(cmd: &str, stderr_to: Option<&str>) -> std::io::Result<Self> {
        let stderr = match stderr_to {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::null(),
        };
        let mut child = shell(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let w = BufWriter::with_capacity(64 * 1024, child.stdin.take().unwrap());
        let r = BufReader::with_capacity(256 * 1024, child.stdout.take().unwrap());
        Ok(Self {
            child,
            w,
            r,
            line: Vec::with_capacity(4096),
        })
    }

    pub async fn send(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.w.write_all(body).await?;
        self.w.write_all(b"\n").await?;
        self.w.flush().await
    }

    /// Sends a request and waits for the response with `id`, skipping
    /// notifications and log lines. Returns whether it was a success.
    pub async fn call(&mut self, body: &[u8], id: u64) -> Result<bool, String> {
        self.send(body).await.map_err(|e| format!("write: {e}"))?;
        loop {
            self.line.clear();
            let n = self
                .r
                .read_until(b'\n', &mut self.line)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed stdout".into());
            }
            if let Class::Response { id: got, ok } = rpc::classify(&self.line) {
                if got == id {
                    return Ok(ok);
                }
            }
        }
    }

    pub async fn handshake(&mut self) -> Result<(), String> {
        if !self.call(&rpc::initialize_body(1), 1).await? {
            return Err(format!(
                "initialize failed: {}",
                String::from_utf8_lossy(&self.line)
            ));
        }
        self.send(rpc::INITIALIZED)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    pub fn last_line(&self) -> &[u8] {
        &self.line
    }

    /// Closes stdin and waits briefly for a clean exit, then kills.
    pub async fn shutdown(mut self) {
        let _ = self.w.shutdown().await;
        drop(self.w);
        let wait = tokio::time::timeout(std::time::Duration::from_secs(3), self.child.wait());
        if wait.await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
