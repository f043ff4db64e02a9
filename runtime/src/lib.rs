//! The strata front end as a library: the binary in `main.rs` is a thin shell over it, and the
//! fuzz targets and the corpus-replay test call the same parsers the commands use.

pub mod backend;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod default_spec;
pub mod entry;
pub mod foreground;
pub mod fuzzing;
pub mod host;
pub mod logging;
pub mod state;
