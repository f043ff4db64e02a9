//! The guest agent over its loopback transport: the agent runs as an ordinary host process on a
//! Unix socket and the host side of the vm backend drives it through the whole lifecycle —
//! create, stdio streams, start, exec, tty, signals, wait, stats, bad requests, a crashed agent.
//! No VM is involved; the same protocol runs over vsock in the guest.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use strata::backend::vm::client::AgentAddr;
use strata_agent_protocol::{write_frame, Request, Response, Stream};
use strata_integration::{agent_bin, require_root, static_program, strata_bin, Bundle, TempDir};

struct Agent {
    child: Child,
    work: TempDir,
    addr: AgentAddr,
    ids: Vec<String>,
}

impl Agent {
    fn start(bundle: &Bundle) -> Agent {
        let work = TempDir::new("agent");
        let ready_path = work.path().join("ready.sock");
        let ready = UnixListener::bind(&ready_path).unwrap();
        let sock = work.path().join("agent.sock");
        let child = Command::new(agent_bin())
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--ready")
            .arg(format!("unix:{}", ready_path.display()))
            .arg("--runtime")
            .arg(agent_bin())
            .arg("--work")
            .arg(work.path())
            .arg("--rootfs")
            .arg(bundle.rootfs())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        strata::backend::vm::client::accept_ready(&ready).expect("the agent said it is up");
        Agent {
            child,
            work,
            addr: AgentAddr::Unix { path: sock },
            ids: Vec::new(),
        }
    }

    fn call(&self, req: Request) -> Response {
        self.addr.call(&req, Some(Duration::from_secs(30))).unwrap()
    }

    fn create(&mut self, id: &str, spec: &Value) {
        self.create_with(id, spec, false);
    }

    fn create_with(&mut self, id: &str, spec: &Value, allow_vsock: bool) {
        let reply = self.call(Request::Create {
            id: id.into(),
            spec: spec.clone(),
            allow_vsock,
            network: vec![],
            pod: None,
            net_sysctls: Default::default(),
        });
        assert!(
            matches!(reply, Response::Created { pid } if pid > 0),
            "{reply:?}"
        );
        self.ids.push(id.to_string());
    }

    fn attach(&self, id: &str, exec_id: Option<&str>, stream: Stream) -> UnixStream {
        self.addr.attach(id, exec_id, stream).unwrap()
    }

    fn wait(&self, id: &str, exec_id: Option<&str>) -> i32 {
        match self.addr.call(
            &Request::Wait {
                id: id.into(),
                exec_id: exec_id.map(str::to_string),
            },
            Some(Duration::from_secs(30)),
        ) {
            Ok(Response::Exited { status }) => status,
            other => panic!("wait: {other:?}"),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = Command::new(strata_bin())
                .args(["--config", strata_integration::NO_NODE_CONFIG])
                .arg("--root")
                .arg(self.work.path().join("state"))
                .args(["delete", "--force", id])
                .output();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        strata_integration::remove_test_cgroup_parent();
    }
}

fn read_all(mut s: UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn spec_for(bundle: &Bundle, args: &[&str]) -> Value {
    let mut spec = bundle.config.clone();
    spec["process"]["args"] = json!(args);
    spec["linux"]["cgroupsPath"] = json!(format!(
        "/strata-test/agent-{}",
        strata_integration::unique("c")
    ));
    spec
}

#[test]
fn lifecycle_with_stdio_streams_and_exit_code() {
    require_root!();
    let bundle = Bundle::new(&["true"]);
    let mut agent = Agent::start(&bundle);
    let spec = spec_for(
        &bundle,
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; read x; echo got $x; exit 3",
        ],
    );
    agent.create("c1", &spec);
    let mut stdin = agent.attach("c1", None, Stream::Stdin);
    let stdout = agent.attach("c1", None, Stream::Stdout);
    let stderr = agent.attach("c1", None, Stream::Stderr);
    assert_eq!(agent.call(Request::Start { id: "c1".into() }), Response::Ok);
    stdin.write_all(b"hi\n").unwrap();
    drop(stdin);
    assert_eq!(read_all(stdout), "out\ngot hi\n");
    assert_eq!(read_all(stderr), "err\n");
    assert_eq!(agent.wait("c1", None), 3);
    // A second waiter gets the same status.
    assert_eq!(agent.wait("c1", None), 3);
}

#[test]
fn a_process_exits_while_its_stdin_is_still_open() {
    require_root!();
    let bundle = Bundle::new(&["true"]);
    let mut agent = Agent::start(&bundle);
    agent.create("c6", &spec_for(&bundle, &["sh", "-c", "echo bye; exit 2"]));
    // The host never closes stdin (a shim's FIFO): the process must still be able to end.
    let _stdin = agent.attach("c6", None, Stream::Stdin);
    let stdout = agent.attach("c6", None, Stream::Stdout);
    assert_eq!(agent.call(Request::Start { id: "c6".into() }), Response::Ok);
    assert_eq!(read_all(stdout), "bye\n");
    assert_eq!(agent.wait("c6", None), 2);
}

#[test]
fn exec_signal_and_kill() {
    require_root!();
    let bundle = Bundle::new(&["true"]);
    let mut agent = Agent::start(&bundle);
    agent.create("c2", &spec_for(&bundle, &["sleep", "100"]));
    assert_eq!(agent.call(Request::Start { id: "c2".into() }), Response::Ok);
    let process = json!({"args": ["sh", "-c", "echo in exec; cat /proc/1/cmdline; exit 5"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                         "env": ["PATH=/bin"]});
    let reply = agent.call(Request::Exec {
        id: "c2".into(),
        exec_id: "e1".into(),
        process,
    });
    assert!(matches!(reply, Response::Created { .. }), "{reply:?}");
    let out = agent.attach("c2", Some("e1"), Stream::Stdout);
    assert_eq!(read_all(out), "in exec\nsleep\u{0}100\u{0}");
    assert_eq!(agent.wait("c2", Some("e1")), 5);
    // SIGKILL of the init ends the container with 128+9.
    assert_eq!(
        agent.call(Request::Signal {
            id: "c2".into(),
            exec_id: None,
            signal: 9,
            all: false
        }),
        Response::Ok
    );
    assert_eq!(agent.wait("c2", None), 137);
    let reply = agent.call(Request::Signal {
        id: "c2".into(),
        exec_id: None,
        signal: 15,
        all: false,
    });
    assert_eq!(
        reply,
        Response::Error {
            message: "container not running".into()
        }
    );
}

#[test]
fn terminal_resize_and_stats() {
    require_root!();
    let bundle = Bundle::new(&["true"]);
    let mut agent = Agent::start(&bundle);
    let mut spec = spec_for(&bundle, &["sh", "-c", "read x; tty; echo $x"]);
    spec["process"]["terminal"] = json!(true);
    agent.create("c3", &spec);
    let mut tty = agent.attach("c3", None, Stream::Tty);
    assert_eq!(
        agent.call(Request::ResizeTty {
            id: "c3".into(),
            exec_id: None,
            rows: 40,
            cols: 100
        }),
        Response::Ok
    );
    assert_eq!(agent.call(Request::Start { id: "c3".into() }), Response::Ok);
    match agent.call(Request::Stats { id: "c3".into() }) {
        Response::Stats { stats } => {
            assert!(
                stats["pids"]["current"].as_u64().unwrap_or(0) >= 1,
                "{stats}"
            );
            assert!(
                stats["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
                "{stats}"
            );
        }
        other => panic!("stats: {other:?}"),
    }
    tty.write_all(b"typed\n").unwrap();
    let mut seen = String::new();
    tty.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 512];
    while !seen.contains("typed\r\n/dev/pts/") || !seen.ends_with("typed\r\n") {
        match tty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(seen.contains("/dev/pts/0"), "terminal output: {seen:?}");
    assert_eq!(agent.wait("c3", None), 0);
}

#[test]
fn bad_requests_get_a_reason() {
    require_root!();
    let bundle = Bundle::new(&["true"]);
    let mut agent = Agent::start(&bundle);
    let err = |r: Response| match r {
        Response::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(err(agent.call(Request::Start { id: "nope".into() })).contains("does not exist"));
    assert!(err(agent.call(Request::Wait {
        id: "nope".into(),
        exec_id: None
    }))
    .contains("does not exist"));
    assert!(err(agent.call(Request::Create {
        id: "../x".into(),
        spec: json!({}),
        allow_vsock: false,
        network: vec![],
        pod: None,
        net_sysctls: Default::default(),
    }))
    .contains("../x"));
    // A spec the runtime refuses: its own one-line error comes back.
    let mut bad = spec_for(&bundle, &["true"]);
    bad["process"]["cwd"] = json!("relative");
    assert!(err(agent.call(Request::Create {
        id: "bad".into(),
        spec: bad,
        allow_vsock: false,
        network: vec![],
        pod: None,
        net_sysctls: Default::default(),
    }))
    .contains("cwd"));
    agent.create("c4", &spec_for(&bundle, &["sleep", "100"]));
    assert!(err(agent.call(Request::Create {
        id: "c4".into(),
        spec: spec_for(&bundle, &["true"]),
        allow_vsock: false,
        network: vec![],
        pod: None,
        net_sysctls: Default::default(),
    }))
    .contains("already exists"));
    assert!(agent
        .addr
        .attach("c4", Some("nope"), Stream::Stdout)
        .is_err());
    let _out = agent.attach("c4", None, Stream::Stdout);
    let again = agent.addr.attach("c4", None, Stream::Stdout).unwrap_err();
    assert!(again.to_string().contains("attached already"), "{again}");
    // A frame that is not JSON gets a reason before the connection closes.
    let AgentAddr::Unix { path } = &agent.addr else {
        unreachable!()
    };
    let mut raw = UnixStream::connect(path).unwrap();
    raw.write_all(&5u32.to_be_bytes()).unwrap();
    raw.write_all(b"hello").unwrap();
    let reply: Response = strata_agent_protocol::read_frame(&mut raw).unwrap();
    assert!(err(reply).contains("bad request"));
    // A frame of another protocol version is refused by name.
    let mut raw = UnixStream::connect(path).unwrap();
    let text = br#"{"version":99,"body":{"type":"shutdown"}}"#;
    raw.write_all(&(text.len() as u32).to_be_bytes()).unwrap();
    raw.write_all(text).unwrap();
    let reply: Response = strata_agent_protocol::read_frame(&mut raw).unwrap();
    assert!(err(reply).contains("version 99"));
    let _ = write_frame(&mut raw, &Request::Shutdown);
}

#[test]
fn a_crashed_agent_is_an_error_not_a_hang() {
    require_root!();
    let bundle = Bundle::new(&["true"]);
    let mut agent = Agent::start(&bundle);
    agent.create("c5", &spec_for(&bundle, &["sleep", "100"]));
    let addr = agent.addr.clone();
    let waiter = std::thread::spawn(move || {
        addr.call(
            &Request::Wait {
                id: "c5".into(),
                exec_id: None,
            },
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let result = waiter.join().unwrap();
    let e = result.unwrap_err().to_string();
    assert!(e.contains("closed the connection"), "{e}");
    let e = agent
        .addr
        .call(&Request::Start { id: "c5".into() }, None)
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("connecting to the agent"),
        "{e:#}"
    );
}

/// The agent's vsock filter on the runtime it starts: the container's init and an exec'd
/// process cannot open AF_VSOCK unless the host allowed it at create. (This host has vsock, so
/// the refusal here is the filter's; in a guest the vm suite checks the same end to end.)
#[test]
fn vsock_is_refused_to_the_container_unless_allowed() {
    require_root!();
    let Some(program) = static_program("vsock") else {
        return;
    };
    let bundle = Bundle::new(&["true"]);
    std::fs::copy(program, bundle.rootfs().join("bin/vsock")).unwrap();
    let mut agent = Agent::start(&bundle);
    let refused = "socket: EAFNOSUPPORT\nsocket (high bits): EAFNOSUPPORT\n";
    let opened = "socket: ok\nsocket (high bits): ok\n";
    for (id, allow, expected) in [("denied", false, refused), ("allowed", true, opened)] {
        let spec = spec_for(&bundle, &["sh", "-c", "vsock socket; exec sleep 100"]);
        agent.create_with(id, &spec, allow);
        let out = agent.attach(id, None, Stream::Stdout);
        assert_eq!(agent.call(Request::Start { id: id.into() }), Response::Ok);
        let mut out = std::io::BufReader::new(out);
        let mut init = String::new();
        for _ in 0..2 {
            std::io::BufRead::read_line(&mut out, &mut init).unwrap();
        }
        assert_eq!(init, expected, "the init of {id}");
        let process = json!({"args": ["vsock", "socket"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                             "env": ["PATH=/bin"]});
        let reply = agent.call(Request::Exec {
            id: id.into(),
            exec_id: "e1".into(),
            process,
        });
        assert!(matches!(reply, Response::Created { .. }), "{reply:?}");
        let exec_out = agent.attach(id, Some("e1"), Stream::Stdout);
        assert_eq!(read_all(exec_out), expected, "an exec in {id}");
        assert_eq!(agent.wait(id, Some("e1")), 0);
    }
}
