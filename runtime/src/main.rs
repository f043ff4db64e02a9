//! strata: one runc-compatible OCI runtime front end over native, sandbox and vm backends.

fn main() {
    strata::entry::main_entry()
}
