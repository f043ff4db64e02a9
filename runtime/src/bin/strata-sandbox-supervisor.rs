//! The sandbox backend's supervisor as a program of its own. strata starts it for each
//! sandboxed container when it is installed beside the `strata` binary: it maps only the
//! code a supervisor runs, so a supervisor that lives as long as its container costs less
//! memory than a second copy of the whole runtime (see `sandbox::spawn_supervisor`).

fn main() {
    strata::backend::sandbox::supervisor_main()
}
