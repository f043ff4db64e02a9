//! What the host asks of a running process: signals, its exit, terminal size, stats, limits
//! and its stdio streams.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use strata_agent_protocol::{copy_stream, write_frame, Response, Stream, NOT_RUNNING};

use strata::cli::{Command, UpdateArgs};

use super::{error, Agent, Key};

impl Agent {
    pub(super) fn lookup(&self, key: &Key) -> Result<(i32, Instant)> {
        self.procs()
            .get(key)
            .map(|p| (p.pid, p.since))
            .ok_or_else(|| match &key.1 {
                None => anyhow::anyhow!("container {:?} does not exist in the guest", key.0),
                Some(e) => anyhow::anyhow!("exec {e:?} does not exist in container {:?}", key.0),
            })
    }

    pub(super) fn signal(&self, key: Key, signal: i32, all: bool) -> Result<Response> {
        if signal != 0 {
            nix::sys::signal::Signal::try_from(signal).context("signal number")?;
        }
        if all && key.1.is_none() {
            let allow_vsock = self.allows_vsock(&key.0);
            let command = Command::Kill {
                id: key.0,
                signal: Some(signal.to_string()),
                all: true,
            };
            self.runtime(command, None, allow_vsock)?;
            return Ok(Response::Ok);
        }
        let (pid, since) = self.lookup(&key)?;
        if self.reaper.exited(pid, since).is_some() {
            bail!("{NOT_RUNNING}");
        }
        // Signal 0 only asks whether the process exists, as kill(2) does.
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling pid {pid}"));
        }
        Ok(Response::Ok)
    }

    pub(super) fn wait(&self, key: &Key) -> Result<Response> {
        let (pid, since) = self.lookup(key)?;
        match self.reaper.wait(pid, since, None) {
            Some(status) => Ok(Response::Exited { status }),
            None => bail!("lost track of pid {pid}"),
        }
    }

    pub(super) fn resize(&self, key: &Key, rows: u16, cols: u16) -> Result<Response> {
        let procs = self.procs();
        let fd = procs
            .get(key)
            .and_then(|p| p.tty_ctl.as_ref())
            .context("the process has no terminal")?;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(std::io::Error::last_os_error()).context("resizing the terminal");
        }
        Ok(Response::Ok)
    }

    pub(super) fn stats(&self, id: &str) -> Result<Response> {
        let command = Command::Events {
            id: id.to_string(),
            stats: true,
            interval: "5s".into(),
        };
        let out = self.runtime(command, None, self.allows_vsock(id))?;
        let event: serde_json::Value =
            serde_json::from_slice(&out).context("stats from the runtime")?;
        Ok(Response::Stats {
            stats: event["data"].clone(),
        })
    }

    pub(super) fn update(&self, id: &str, resources: serde_json::Value) -> Result<Response> {
        let file = self.cfg.work.join("exec").join(format!("{id}-update.json"));
        std::fs::write(&file, serde_json::to_vec(&resources)?)?;
        let command = Command::Update(UpdateArgs {
            id: id.to_string(),
            resources: Some(file.clone()),
            ..Default::default()
        });
        let result = self.runtime(command, None, self.allows_vsock(id));
        let _ = std::fs::remove_file(&file);
        result.map(|_| Response::Ok)
    }

    pub(super) fn attach(&self, mut conn: UnixStream, key: Key, stream: Stream) {
        let fd = {
            let mut procs = self.procs();
            procs.get_mut(&key).and_then(|p| match stream {
                Stream::Stdin => p.stdin.take(),
                Stream::Stdout => p.stdout.take(),
                Stream::Stderr => p.stderr.take(),
                Stream::Tty => p.tty.take(),
            })
        };
        let Some(fd) = fd else {
            let _ = write_frame(
                &mut conn,
                &error(format!(
                    "no {stream:?} stream to attach for {key:?} (unknown, or attached already)"
                )),
            );
            return;
        };
        if write_frame(&mut conn, &Response::Ok).is_err() {
            return;
        }
        let file = File::from(fd);
        match stream {
            Stream::Stdout | Stream::Stderr => {
                copy_stream(file, &conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            Stream::Stdin => copy_stream(&conn, file),
            Stream::Tty => {
                let (Ok(reader), Ok(to_host)) = (file.try_clone(), conn.try_clone()) else {
                    return;
                };
                let out = std::thread::spawn(move || {
                    copy_stream(reader, &to_host);
                    let _ = to_host.shutdown(std::net::Shutdown::Write);
                });
                copy_stream(&conn, file);
                let _ = out.join();
            }
        }
    }
}
