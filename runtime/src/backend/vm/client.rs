//! Talking to the guest agent from the host: through the VMM's hybrid-vsock Unix socket
//! (`CONNECT <port>` handshake; the same protocol for our VMM and for vhost-device-vsock), or
//! through a plain Unix socket when the agent runs as a host process (the loopback tests).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use strata_agent_protocol::{
    read_frame, write_frame, FrameError, Request, Response, Stream, AGENT_PORT,
};

/// Default limit for one control request; `Wait` has none.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AgentAddr {
    /// The host side of a hybrid vsock device: connect, then `CONNECT <port>\n`.
    Vsock { uds: PathBuf },
    /// The agent's own Unix socket (agent running on the host).
    Unix { path: PathBuf },
}

impl AgentAddr {
    pub fn connect(&self, timeout: Duration) -> Result<UnixStream> {
        match self {
            AgentAddr::Unix { path } => {
                let s = UnixStream::connect(path)
                    .with_context(|| format!("connecting to the agent at {}", path.display()))?;
                Ok(s)
            }
            AgentAddr::Vsock { uds } => {
                let mut s = UnixStream::connect(uds).with_context(|| {
                    format!("connecting to the VM's vsock socket {}", uds.display())
                })?;
                s.set_read_timeout(Some(timeout))?;
                s.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())?;
                // Byte by byte: the stream carries agent frames right after the OK line.
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    match s.read(&mut byte) {
                        Ok(0) => {
                            bail!("the guest agent is not listening (vsock connection refused)")
                        }
                        Ok(_) if byte[0] == b'\n' => break,
                        Ok(_) if line.len() < 64 => line.push(byte[0]),
                        Ok(_) => bail!("malformed vsock handshake reply"),
                        Err(e) => return Err(e).context("vsock handshake"),
                    }
                }
                if !line.starts_with(b"OK") {
                    bail!(
                        "vsock handshake refused: {}",
                        String::from_utf8_lossy(&line)
                    );
                }
                s.set_read_timeout(None)?;
                Ok(s)
            }
        }
    }

    /// One request on a fresh connection. `timeout` None waits as long as the agent needs.
    pub fn call(&self, req: &Request, timeout: Option<Duration>) -> Result<Response> {
        let mut s = self.connect(timeout.unwrap_or(REQUEST_TIMEOUT))?;
        call_on(&mut s, req, timeout)
    }

    /// A request whose success is `Ok`; an agent error becomes this call's error.
    pub fn call_ok(&self, req: &Request) -> Result<()> {
        Ok(self.call(req, Some(REQUEST_TIMEOUT))?.into_ok()?)
    }

    /// Opens a stdio stream: after the agent's Ok the connection is raw bytes.
    pub fn attach(&self, id: &str, exec_id: Option<&str>, stream: Stream) -> Result<UnixStream> {
        let mut s = self.connect(REQUEST_TIMEOUT)?;
        let req = Request::Attach {
            id: id.to_string(),
            exec_id: exec_id.map(str::to_string),
            stream,
        };
        call_on(&mut s, &req, Some(REQUEST_TIMEOUT))?.into_ok()?;
        Ok(s)
    }
}

/// Reads from a connection until a deadline for the whole reply: a guest that sends its
/// answer a byte at a time cannot keep a host command waiting past it (each read alone would
/// stay within a per-read timeout).
struct Deadline<'a> {
    s: &'a UnixStream,
    until: Option<std::time::Instant>,
}

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.s.set_read_timeout(Some(left))?;
        }
        std::io::Read::read(&mut self.s, buf)
    }
}

/// Text from the guest, fit to print on the host: control characters (a terminal's escape
/// sequences, newlines) escaped, and no longer than a line should be. The guest may be in a
/// hostile container's hands.
pub fn from_guest(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(1024) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One request on an open connection; `timeout` bounds the whole reply.
pub fn call_on(s: &mut UnixStream, req: &Request, timeout: Option<Duration>) -> Result<Response> {
    s.set_read_timeout(timeout)?;
    write_frame(s, req).context("sending a request to the guest agent")?;
    let mut reader = Deadline {
        s,
        until: timeout.map(|t| std::time::Instant::now() + t),
    };
    let reply = read_frame::<_, Response>(&mut reader).map_err(|e| match e {
        FrameError::Io(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            anyhow::anyhow!(
                "the guest agent did not answer within {} s",
                timeout.unwrap_or_default().as_secs()
            )
        }
        FrameError::Closed => {
            anyhow::anyhow!("the guest agent closed the connection (did the VM stop?)")
        }
        other => anyhow::anyhow!("guest agent: {}", from_guest(&other.to_string())),
    })?;
    s.set_read_timeout(None)?;
    Ok(match reply {
        Response::Error { message } => Response::Error {
            message: from_guest(&message),
        },
        other => other,
    })
}

/// Waits for the agent's ready connection on `listener` (bound before the VM started).
pub fn accept_ready(listener: &std::os::unix::net::UnixListener) -> Result<()> {
    let (mut s, _) = listener.accept().context("waiting for the guest agent")?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    match read_frame::<_, Response>(&mut s) {
        Ok(Response::Ok) => Ok(()),
        Ok(other) => bail!("unexpected ready message from the guest agent: {other:?}"),
        Err(e) => bail!("guest agent ready message: {e}"),
    }
}
