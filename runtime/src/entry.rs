//! The entry points: the `strata` command line, and a command handed over as a value (the
//! guest agent's build, which has no command-line parser).

use crate::cli::{Cli, Command};
use crate::commands::{self, Globals};
use crate::logging;

/// The `strata` command line: parses the process's arguments, runs the subcommand and exits
/// with its code.
#[cfg(feature = "cli")]
pub fn main_entry() -> ! {
    use clap::Parser as _;
    default_sigpipe();
    #[cfg(feature = "sandbox")]
    if std::env::args_os()
        .next()
        .is_some_and(|a| a == crate::backend::sandbox::SUPERVISOR_ARGV0)
    {
        crate::backend::sandbox::supervisor_main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, as every other error: clap's first line names what was wrong; the
            // usage text after it is what --help is for.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let msg = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("strata: error: {msg} (see strata --help)");
            std::process::exit(2);
        }
    };
    // args_os: an argument that is not UTF-8 (a bundle path, say) must not panic here.
    let config_explicit = std::env::args_os().any(|a| {
        let a = a.as_encoded_bytes();
        a == b"--config" || a.starts_with(b"--config=")
    });
    run(cli, config_explicit)
}

/// Runs a command given as JSON (a [`Cli`] value, as the guest agent builds it) and exits
/// with its code. Its node config counts as named explicitly.
pub fn run_serialized(json: &[u8]) -> ! {
    default_sigpipe();
    match serde_json::from_slice::<Cli>(json) {
        Ok(cli) => run(cli, true),
        Err(e) => {
            eprintln!("strata: malformed command: {e}");
            std::process::exit(2);
        }
    }
}

/// A closed pipe on stdout (`strata events | head`) ends us quietly, as it does any Unix
/// tool, instead of a panic in println.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to the default has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Runs one parsed command and exits with its code.
pub fn run(mut cli: Cli, config_explicit: bool) -> ! {
    // A relative --root is taken from where strata was started: create changes its working
    // directory (to bind sockets by short names) before it is done with the root.
    if cli.root.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            cli.root = cwd.join(&cli.root);
        }
    }
    if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("strata: cannot open --log file: {e}");
    }
    let g = Globals::from_cli(&cli, config_explicit);
    let result = match &cli.command {
        Command::Create(a) => commands::create(&g, &a.id, &a.common),
        Command::Start { id } => commands::start(&g, id),
        Command::State { id } => commands::state(&g, id),
        Command::Kill { id, signal, all } => commands::kill(&g, id, signal.as_deref(), *all),
        Command::Delete { id, force } => commands::delete(&g, id, *force),
        Command::Run(a) => commands::run(&g, &a.id, &a.common, a.detach, a.keep),
        Command::Exec(a) => commands::exec(&g, a),
        Command::List { format, quiet } => commands::list(&g, *format, *quiet),
        Command::Pause { id } => commands::pause(&g, id, true),
        Command::Resume { id } => commands::pause(&g, id, false),
        Command::Ps {
            format,
            id,
            ps_args,
        } => commands::ps(&g, id, *format, ps_args),
        Command::Events {
            id,
            stats,
            interval,
        } => commands::events(&g, id, *stats, interval),
        Command::Update(a) => commands::update(&g, a),
        Command::Spec { bundle, rootless } => commands::spec(bundle, *rootless),
        Command::Features => commands::features(),
        Command::Check => crate::config::NodeConfig::load(g.config, g.config_explicit)
            .and_then(|n| crate::check::run(&n)),
        Command::Checkpoint { .. } | Command::Restore { .. } => Err(anyhow::anyhow!(
            "{}: not supported yet: strata has no CRIU integration (nothing was changed)",
            cli.command.name()
        )),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line: the context chain joined by ": ".
            let msg = format!("{e:#}").replace('\n', " ");
            if cli.log.is_some() {
                tracing::error!("{msg}");
            }
            // "error:" as runc's and most tools' stderr says it: scripts and test suites
            // look for the word rather than the exit status.
            eprintln!("strata: error: {msg}");
            std::process::exit(1);
        }
    }
}
