//! The host ↔ guest agent protocol: length-prefixed JSON frames (a big-endian u32 length, then a
//! JSON object `{"version": N, "body": ...}`), one request and one response at a time per
//! connection.
//!
//! Connections: the agent connects once to the host's [`READY_PORT`] when it is up and says
//! [`Response::Ok`]; the host then connects to the agent's [`AGENT_PORT`] for every control
//! conversation, and once per stdio stream ([`Request::Attach`]), after which that connection
//! carries raw bytes only, so output is never interleaved with or blocked by control traffic.

use std::io::{Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bumped on any incompatible change; both sides refuse frames of another version. 2: the
/// agent confines containers as `Create.allow_vsock` says (an agent that ignored the field
/// would leave them unconfined, so the versions must not mix). 3: `Create.network` (an agent
/// that ignored it would run the container without its network). 4: bind sources in the share
/// (`SHARE_PREFIX`) instead of copied files; `Create.pod`, `Delete` and `Freeze`, for pods.
pub const VERSION: u32 = 4;
/// The agent listens here (vsock port, or the name of the loopback socket).
pub const AGENT_PORT: u32 = 1024;
/// The host listens here for the agent's "I am up".
pub const READY_PORT: u32 = 1025;
/// Largest frame accepted: a spec fits many times over.
pub const MAX_FRAME: usize = 16 << 20;
/// The guest's vsock context ID; the host is 2 ([`HOST_CID`]), the only peer the agent
/// accepts.
pub const GUEST_CID: u32 = 3;
pub const HOST_CID: u32 = 2;
/// Mount sources the host rewrites to names in the VM's share: the virtio-fs device (tag
/// [`SHARE_TAG`]) through which the host exports the container's bind-mounted directories and
/// files, each under its own name; the agent mounts the share and points each source there.
pub const SHARE_PREFIX: &str = "@strata-share/";
/// A pod member's namespace path in `Create.spec`: the agent points it at the namespace of
/// that type of the pod's sandbox container (or, where the sandbox shares the guest's own,
/// drops it so that the member shares it too).
pub const POD_NAMESPACE: &str = "@strata-pod";
/// virtio-fs tag of the share; the agent mounts it when the kernel command line has
/// `strata.share=<tag>`.
pub const SHARE_TAG: &str = "share";
/// The error text for a container or process that is gone. The wording is a contract:
/// containerd's shim recognises "container not running" and treats the kill as done.
pub const NOT_RUNNING: &str = "container not running";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
    /// Both directions of a terminal.
    Tty,
}

/// A network interface of the guest, as the host's interface it stands for is configured:
/// the guest's virtio-net device with this MAC gets the MTU, the addresses and the routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInterface {
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
    /// Address and prefix length.
    pub addresses: Vec<(std::net::IpAddr, u8)>,
    pub routes: Vec<GuestRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRoute {
    /// Network and prefix length; none for the default route.
    pub destination: Option<(std::net::IpAddr, u8)>,
    pub gateway: Option<std::net::IpAddr>,
    /// The route's priority (metric); none for the kernel's default.
    #[serde(default)]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Create the container from `spec` (config.json rewritten for the guest: the agent sets
    /// `root.path` to the shared rootfs, and bind sources named with [`SHARE_PREFIX`] to
    /// their places in the share).
    Create {
        id: String,
        spec: serde_json::Value,
        /// The container's processes may open AF_VSOCK sockets (the bundle asked, and the
        /// node honours the ask); otherwise the agent's filter refuses them.
        allow_vsock: bool,
        /// The guest's interfaces, configured before the container is created; the
        /// container then shares the guest's network namespace. Empty: the container's own
        /// namespace, with only its loopback.
        #[serde(default)]
        network: Vec<GuestInterface>,
        /// The pod the container joins: the id, in this guest, of the pod's sandbox
        /// container, whose network, IPC and UTS namespaces it shares (and its root comes
        /// through the share). None: a container of its own.
        #[serde(default)]
        pod: Option<String>,
        /// `net.*` sysctls of the bundle, for the guest's network namespace, which the
        /// container shares when the host's interfaces were carried in.
        #[serde(default)]
        net_sysctls: std::collections::BTreeMap<String, String>,
    },
    /// Remove container `id` from the guest (a pod member deleted while its VM goes on): its
    /// processes killed, its runtime state and bundle gone.
    Delete {
        id: String,
    },
    /// Freeze (`frozen`) or thaw container `id`'s processes in the guest (a pod member: the
    /// VM goes on for the others).
    Freeze {
        id: String,
        frozen: bool,
    },
    Start {
        id: String,
    },
    /// Run `process` (an OCI process object) in the container.
    Exec {
        id: String,
        exec_id: String,
        process: serde_json::Value,
    },
    Signal {
        id: String,
        exec_id: Option<String>,
        signal: i32,
        all: bool,
    },
    /// Replies when the process has exited (no timeout).
    Wait {
        id: String,
        exec_id: Option<String>,
    },
    ResizeTty {
        id: String,
        exec_id: Option<String>,
        rows: u16,
        cols: u16,
    },
    /// The container's cgroup statistics inside the guest.
    Stats {
        id: String,
    },
    /// New resource limits (an OCI `linux.resources` object), applied inside the guest.
    Update {
        id: String,
        resources: serde_json::Value,
    },
    /// Turns this connection into the raw byte stream of one stdio stream.
    Attach {
        id: String,
        exec_id: Option<String>,
        stream: Stream,
    },
    /// Stop everything and power the guest off.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Ok,
    /// The container's (or exec's) PID inside the guest.
    Created {
        pid: i32,
    },
    /// Exit status: the code, or 128+N for a signal.
    Exited {
        status: i32,
    },
    Stats {
        stats: serde_json::Value,
    },
    /// The request failed; `message` is shown to the user as is.
    Error {
        message: String,
    },
}

/// Why a reply is not the one asked for.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The agent's own error text, shown to the user as is.
    #[error("{0}")]
    Agent(String),
    #[error("unexpected agent reply {0:?}")]
    Unexpected(Box<Response>),
}

impl Response {
    /// The reply as a result: `Error` becomes the agent's message, anything else is passed
    /// to the caller to match the variant it expects.
    pub fn into_result(self) -> Result<Response, ReplyError> {
        match self {
            Response::Error { message } => Err(ReplyError::Agent(message)),
            other => Ok(other),
        }
    }

    /// The error for a reply of a variant the caller did not expect.
    pub fn unexpected(self) -> ReplyError {
        ReplyError::Unexpected(Box::new(self))
    }

    /// The reply to a request answered by `Ok`.
    pub fn into_ok(self) -> Result<(), ReplyError> {
        match self.into_result()? {
            Response::Ok => Ok(()),
            other => Err(other.unexpected()),
        }
    }
}

/// Copies a stdio stream until its end, with plain reads and writes, on both sides of the VM.
///
/// Not std::io::copy: from a socket into a pipe it uses splice(2), which sleeps in the socket
/// read while holding the pipe's lock, so a container could not even exit (its pipe release
/// waits for that lock, in D state) until the host sent more input. A pty master reports the
/// end of its last writer as EIO, which ends the copy like end of file.
pub fn copy_stream(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Frame<T> {
    version: u32,
    body: T,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("protocol version {got}, expected {VERSION}: the agent and strata do not match")]
    Version { got: u32 },
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, body: &T) -> Result<(), FrameError> {
    let json = serde_json::to_vec(&Frame {
        version: VERSION,
        body,
    })
    .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if json.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(json.len()));
    }
    let mut buf = Vec::with_capacity(4 + json.len());
    buf.extend_from_slice(&(json.len() as u32).to_be_bytes());
    buf.extend_from_slice(&json);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    // The version is checked before the body so that a newer peer gets a clear error rather
    // than a parse failure on a field it added.
    let frame: Frame<serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if frame.version != VERSION {
        return Err(FrameError::Version { got: frame.version });
    }
    serde_json::from_value(frame.body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let reqs = vec![
            Request::Create {
                id: "c1".into(),
                spec: serde_json::json!({"ociVersion": "1.2.0"}),
                allow_vsock: false,
                pod: Some("sandbox".into()),
                net_sysctls: [("net.ipv4.ping_group_range".into(), "0 0".into())].into(),
                network: vec![GuestInterface {
                    mac: [2, 0, 0, 0, 0, 1],
                    mtu: Some(1450),
                    addresses: vec![
                        ("10.88.0.5".parse().unwrap(), 16),
                        ("fd00::5".parse().unwrap(), 64),
                    ],
                    routes: vec![GuestRoute {
                        destination: None,
                        gateway: Some("10.88.0.1".parse().unwrap()),
                        metric: Some(100),
                    }],
                }],
            },
            Request::Signal {
                id: "c1".into(),
                exec_id: Some("e1".into()),
                signal: 9,
                all: false,
            },
            Request::Attach {
                id: "c1".into(),
                exec_id: None,
                stream: Stream::Tty,
            },
            Request::Shutdown,
        ];
        let mut buf = Vec::new();
        for r in &reqs {
            write_frame(&mut buf, r).unwrap();
        }
        let mut cursor = std::io::Cursor::new(buf);
        for r in &reqs {
            let got: Request = read_frame(&mut cursor).unwrap();
            assert_eq!(&got, r);
        }
        assert!(matches!(
            read_frame::<_, Request>(&mut cursor),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let frame = |json: &str| {
            let mut b = (json.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(json.as_bytes());
            std::io::Cursor::new(b)
        };
        // The version before this one: its agents do not confine vsock.
        let err =
            read_frame::<_, Request>(&mut frame(r#"{"version":1,"body":{"type":"shutdown"}}"#))
                .unwrap_err();
        assert!(err.to_string().contains("version 1"), "{err}");
        let reboot = format!(r#"{{"version":{VERSION},"body":{{"type":"reboot"}}}}"#);
        let err = read_frame::<_, Request>(&mut frame(&reboot)).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        let err = read_frame::<_, Request>(&mut frame("not json")).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        let mut huge = std::io::Cursor::new(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
        assert!(matches!(
            read_frame::<_, Request>(&mut huge),
            Err(FrameError::TooLarge(_))
        ));
    }
}
