//! Replays the fuzz seeds (and the inputs fuzzing found, kept with them as regressions)
//! through the same entry points the fuzz targets use, plus a few hostile inputs written by
//! hand: each must return, without a panic. CI runs this; `cargo fuzz` runs the real thing.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("config_json", strata::fuzzing::config_json),
    ("node_config", strata::fuzzing::node_config),
    ("seccomp_profile", strata::fuzzing::seccomp_profile),
    ("state_file", strata::fuzzing::state_file),
    ("agent_frames", strata::fuzzing::agent_frames),
];

#[test]
fn every_seed_and_regression_input_is_handled() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (name, target) in TARGETS {
        let dir = seeds.join(name);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            count += 1;
        }
        assert!(count > 0, "no seeds for {name} in {}", dir.display());
    }
}

#[test]
fn hostile_inputs_return() {
    let deep_json = "[".repeat(100_000);
    let deep_object = "{\"a\":".repeat(50_000);
    let big_number = format!(
        "{{\"ociVersion\": \"1.0.0\", \"process\": {{\"user\": {{\"uid\": 1{}}}}}}}",
        "0".repeat(10_000)
    );
    let many_env = format!(
        "{{\"ociVersion\":\"1.0.0\",\"process\":{{\"cwd\":\"/\",\"args\":[\"a\"],\"env\":[{}]}}}}",
        vec!["\"A=1\""; 200_000].join(",")
    );
    let deep_toml = "a = ".to_string() + &"[".repeat(100_000);
    let inputs: Vec<&[u8]> = vec![
        b"",
        b"\xff\xfe\x00",
        b"null",
        deep_json.as_bytes(),
        deep_object.as_bytes(),
        big_number.as_bytes(),
        many_env.as_bytes(),
        deep_toml.as_bytes(),
    ];
    for input in inputs {
        for (_, target) in TARGETS {
            target(input);
        }
    }
}
