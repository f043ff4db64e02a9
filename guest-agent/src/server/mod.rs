//! The agent's requests, served one connection per thread: the requests themselves here, the
//! runtime calls that create processes in `launch`, what acts on a running process in
//! `process`.

mod launch;
mod process;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use strata_agent_protocol::{read_frame, write_frame, FrameError, Request, Response};

use strata::cli::Command;

use crate::reaper::Reaper;
use crate::Config;

use crate::guest::power_off;
use crate::transport::{announce, listen};

/// The name the agent runs itself under to be the runtime (see `main`).
pub const RUNTIME_ARGV0: &str = "strata";

/// How long one runtime command (create, start, exec, ...) may take.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(60);

type Key = (String, Option<String>);

/// A new process's stdio: the fds the runtime passes on, the console socket it sends a
/// terminal to, and the agent's ends of the pipes.
type ProcStdio = (
    Option<[OwnedFd; 3]>,
    Option<(PathBuf, UnixListener)>,
    [Option<OwnedFd>; 3],
);

/// A container init or exec'd process and the agent's ends of its stdio.
struct Proc {
    pid: i32,
    since: Instant,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    tty: Option<OwnedFd>,
    /// A second handle on the pty master, for resizes after the stream took the first.
    tty_ctl: Option<OwnedFd>,
    /// The host let the container open AF_VSOCK sockets (for an exec: its container did).
    allow_vsock: bool,
}

struct Agent {
    cfg: Config,
    reaper: Reaper,
    procs: Mutex<HashMap<Key, Proc>>,
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

pub fn serve(cfg: Config, reaper: Reaper) -> Result<()> {
    for dir in ["state", "bundles", "console", "logs", "exec"] {
        std::fs::create_dir_all(cfg.work.join(dir))?;
    }
    let listener = listen(&cfg.listen)?;
    if let Some(ready) = &cfg.ready {
        announce(ready)?;
    }
    let agent = Arc::new(Agent {
        cfg,
        reaper,
        procs: Mutex::new(HashMap::new()),
    });
    loop {
        let conn = match listener.accept() {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("accepting a connection"),
        };
        let agent = agent.clone();
        std::thread::spawn(move || agent.connection(conn));
    }
}

impl Agent {
    fn connection(self: Arc<Self>, mut conn: UnixStream) {
        loop {
            let req: Request = match read_frame(&mut conn) {
                Ok(r) => r,
                Err(FrameError::Closed) => return,
                Err(e) => {
                    // A bad frame gets a reason, then the connection ends: the stream can no
                    // longer be trusted to be in step.
                    let _ = write_frame(&mut conn, &error(format!("bad request: {e}")));
                    return;
                }
            };
            match req {
                Request::Attach {
                    id,
                    exec_id,
                    stream,
                } => {
                    return self.attach(conn, (id, exec_id), stream);
                }
                Request::Shutdown => {
                    let _ = write_frame(&mut conn, &Response::Ok);
                    drop(conn);
                    self.shutdown();
                }
                other => {
                    let reply = self.handle(other);
                    if write_frame(&mut conn, &reply).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Create {
                id,
                spec,
                allow_vsock,
                network,
                pod,
                net_sysctls,
            } => self.create(
                &id,
                spec,
                allow_vsock,
                &network,
                pod.as_deref(),
                &net_sysctls,
            ),
            Request::Delete { id } => self.delete(&id),
            Request::Freeze { id, frozen } => {
                let allow_vsock = self.allows_vsock(&id);
                let command = if frozen {
                    Command::Pause { id }
                } else {
                    Command::Resume { id }
                };
                self.runtime(command, None, allow_vsock)
                    .map(|_| Response::Ok)
            }
            Request::Start { id } => {
                let allow_vsock = self.allows_vsock(&id);
                self.runtime(Command::Start { id }, None, allow_vsock)
                    .map(|_| Response::Ok)
            }
            Request::Exec {
                id,
                exec_id,
                process,
            } => self.exec(&id, &exec_id, process),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => self.signal((id, exec_id), signal, all),
            Request::Wait { id, exec_id } => self.wait(&(id, exec_id)),
            Request::ResizeTty {
                id,
                exec_id,
                rows,
                cols,
            } => self.resize(&(id, exec_id), rows, cols),
            Request::Stats { id } => self.stats(&id),
            Request::Update { id, resources } => self.update(&id, resources),
            Request::Attach { .. } | Request::Shutdown => {
                Err(anyhow::anyhow!("not a control request"))
            }
        };
        result.unwrap_or_else(|e| error(format!("{e:#}")))
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether container `id` may open AF_VSOCK sockets (an unknown one may not).
    fn allows_vsock(&self, id: &str) -> bool {
        self.procs()
            .get(&(id.to_string(), None))
            .is_some_and(|p| p.allow_vsock)
    }

    fn shutdown(&self) -> ! {
        if self.cfg.pid1 {
            power_off();
        }
        std::process::exit(0);
    }
}
