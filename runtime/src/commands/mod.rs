//! The commands, one file per family; `entry` dispatches to them. Each takes the global flags
//! ([`Globals`]) and its own arguments, and returns the exit code.

mod console;
mod exec;
mod globals;
mod inputs;
mod lifecycle;
mod query;
mod resources;

pub use exec::exec;
pub use globals::{backend_from_program_name, Globals};
pub use inputs::{load_spec, parse_json};
pub use lifecycle::{create, delete, kill, parse_signal, run, start};
pub use query::{features, list, spec, state};
pub use resources::{events, pause, ps, update};
