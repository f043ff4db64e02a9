//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test: each runs raw
//! bytes through the same code a command runs on its input, with no side effect. Errors are
//! the expected outcome; a panic, a hang or an unbounded allocation is a bug.

use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::commands;
use crate::config::{self, NodeConfig};
use crate::state::{self, Record, Status};

/// config.json as `create` reads it: parse with field-naming errors, the side-effect-free
/// validation, backend selection from annotations, the seccomp compiler, the resource
/// normalisation.
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = commands::parse_json::<Spec>(text, Path::new("config.json")) else {
        return;
    };
    // "/" always exists, so validation runs through to the mount checks.
    let _ = strata_linux::container::validate(&spec, Path::new("/"));
    let _ = config::choose(None, &spec, &NodeConfig::default());
    if let Some(linux) = spec.linux() {
        if let Some(seccomp) = linux.seccomp() {
            let _ = strata_linux::seccomp::compile(seccomp);
        }
        if let Some(resources) = linux.resources() {
            let _ = strata_linux::cgroups::resources::without_unset_zeros(resources);
        }
    }
    let _ = state::hook_state_json("fuzz", 1, "creating", Path::new("/bundle"), &spec);
}

/// The node config file (`/etc/strata/config.toml`).
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = NodeConfig::parse(text, Path::new("config.toml")) {
        let _ = config::choose(None, &Spec::default(), &cfg);
    }
}

/// A `linux.seccomp` profile on its own, through the filter compiler.
pub fn seccomp_profile(data: &[u8]) {
    if let Ok(profile) = serde_json::from_slice::<LinuxSeccomp>(data) {
        let _ = strata_linux::seccomp::compile(&profile);
    }
}

/// A container's state file, as every command after `create` reads it.
pub fn state_file(data: &[u8]) {
    if let Ok(rec) = serde_json::from_slice::<Record>(data) {
        let _ = state::validate_id(&rec.id);
        let _ = serde_json::to_vec(&rec.oci_state(Status::Stopped, Vec::new()));
    }
}

/// The agent protocol as either side reads it from a connection: frames until the stream ends
/// or one is refused (the agent reads requests from the host, the host reads the agent's
/// replies).
pub fn agent_frames(data: &[u8]) {
    use strata_agent_protocol::{read_frame, Request, Response};
    let mut host_to_agent = std::io::Cursor::new(data);
    while read_frame::<_, Request>(&mut host_to_agent).is_ok() {}
    let mut agent_to_host = std::io::Cursor::new(data);
    while read_frame::<_, Response>(&mut agent_to_host).is_ok() {}
}
