//! The global flags every command runs under, and the backend a program name implies.

use std::path::Path;

use crate::cli::Cli;
use crate::config::Kind;

pub struct Globals<'a> {
    pub root: &'a Path,
    pub backend: Option<&'a str>,
    pub config: &'a Path,
    pub config_explicit: bool,
    pub systemd_cgroup: bool,
}

impl<'a> Globals<'a> {
    pub fn from_cli(cli: &'a Cli, config_explicit: bool) -> Self {
        Globals {
            root: &cli.root,
            backend: cli.backend.as_deref().or_else(|| {
                std::env::args_os()
                    .next()
                    .and_then(|a0| backend_from_program_name(Path::new(&a0)))
            }),
            config: &cli.config,
            config_explicit,
            systemd_cgroup: cli.systemd_cgroup,
        }
    }
}

/// Installed as `strata-sandbox` or `strata-vm` (a link to strata), strata acts as if given
/// `--backend sandbox|vm`: clients that take only a binary path (containerd's runc shim
/// `BinaryName`, Docker's `runtimes`) get one handler per strength that way.
pub fn backend_from_program_name(argv0: &Path) -> Option<&'static str> {
    let name = argv0.file_name()?.to_str()?;
    let suffix = name.strip_prefix("strata-")?;
    [Kind::Native, Kind::Sandbox, Kind::Vm]
        .into_iter()
        .find(|k| k.name() == suffix)
        .map(Kind::name)
}

#[cfg(test)]
mod tests {
    use super::backend_from_program_name as b;
    use std::path::Path;

    #[test]
    fn link_names_pick_a_backend() {
        assert_eq!(
            b(Path::new("/usr/local/bin/strata-sandbox")),
            Some("sandbox")
        );
        assert_eq!(b(Path::new("strata-vm")), Some("vm"));
        assert_eq!(b(Path::new("/usr/bin/strata-native")), Some("native"));
        assert_eq!(b(Path::new("/usr/bin/strata")), None);
        assert_eq!(b(Path::new("/usr/bin/strata-fast")), None);
    }
}
