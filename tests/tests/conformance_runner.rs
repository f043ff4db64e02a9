//! scripts/conformance, the runner for the OCI conformance suites, on stand-in suites: the
//! real ones are built by whoever runs them (the repository neither carries nor fetches
//! them), so CI checks the runner's verdicts, allow-list, isolation and exit status here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use strata_integration::*;

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn runner() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("scripts/conformance")
}

#[test]
fn the_conformance_runner_judges_isolates_and_allows_as_documented() {
    require_root!();
    let d = TempDir::new("conformance");
    let rt = d.path().join("runtime-tools");
    // runtime-tools programs: TAP, the runtime in $RUNTIME, the cwd the suite's directory.
    script(
        &rt.join("validation/good/good.t"),
        "[ -x \"$RUNTIME\" ] && [ -e rootfs-amd64.tar.gz ] || exit 9\necho 'ok 1 - fine'\necho 1..1",
    );
    script(
        &rt.join("validation/bad/bad.t"),
        "echo 'ok 1 - fine'\necho 'not ok 2 - broken'\necho 1..2",
    );
    script(
        &rt.join("validation/crash/crash.t"),
        "echo '  ---'; echo '  {'; echo '    \"error\": \"the suite says it failed\"'; echo '  }'; \
         echo 1..0",
    );
    // A program that expects the runtime to fail echoes its error; no plan, no diagnostic.
    script(
        &rt.join("validation/refused/refused.t"),
        "echo 'strata: error: refused as expected'; echo 1..0",
    );
    // Its own namespaces: a network namespace with only lo, and /run a fresh tmpfs.
    script(
        &rt.join("validation/isolated/isolated.t"),
        "[ \"$(tail -n +3 /proc/net/dev | wc -l)\" = 1 ] && [ -z \"$(ls /run)\" ] && \
         touch /run/x && echo 'ok 1 - isolated' && echo 1..1",
    );
    script(&rt.join("validation/slow/slow.t"), "sleep 60");
    std::fs::write(rt.join("rootfs-amd64.tar.gz"), b"").unwrap();
    script(&rt.join("runtimetest"), "exit 0");
    // contest: `contest list`, then one group per run.
    let c = d.path().join("contest");
    script(
        &c.join("contest"),
        "if [ \"$1\" = list ]; then echo alpha; echo beta; exit 0; fi\n\
         [ \"$RUNTIME_KIND\" = runc ] || exit 9\n\
         case \"$*\" in\n\
         *alpha*) echo '# Start group alpha'; echo '1 / 2 : first test : ok'; \
                  echo '2 / 2 : second test : not ok';;\n\
         *beta*) echo '1 / 1 : skipped one : skipped';;\n\
         esac",
    );
    script(&c.join("runtimetest"), "exit 0");
    std::fs::write(c.join("bundle.tar.gz"), b"").unwrap();
    let allow = d.path().join("allow");
    std::fs::write(
        &allow,
        "# comments and blank lines are ignored\n\nruntime-tools/crash the suite's own bug\n\
         contest/alpha::sec*test not here\n",
    )
    .unwrap();
    let out_dir = d.path().join("out");
    let run = |extra: &[&str]| {
        let out = Command::new(runner())
            .args(["--runtime", "/bin/true", "--timeout", "5"])
            .arg("--runtime-tools")
            .arg(&rt)
            .arg("--contest")
            .arg(&c)
            .arg("--allow")
            .arg(&allow)
            .arg("--out")
            .arg(&out_dir)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&[]);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(prefix))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no line for {prefix}: {text}"))
    };
    assert_eq!(line("runtime-tools/good"), "passed", "{text}");
    assert_eq!(line("runtime-tools/bad"), "FAILED", "{text}");
    assert_eq!(line("runtime-tools/crash"), "allowed", "{text}");
    assert_eq!(line("runtime-tools/refused"), "passed", "{text}");
    assert_eq!(line("runtime-tools/isolated"), "passed", "{text}");
    assert_eq!(line("runtime-tools/slow"), "FAILED", "{text}");
    assert!(text.contains("runtime-tools/slow  (timed out)"), "{text}");
    assert_eq!(line("contest/alpha::first"), "passed", "{text}");
    assert_eq!(line("contest/alpha::second"), "allowed", "{text}");
    assert!(
        !text.contains("skipped one"),
        "skips are not counted: {text}"
    );
    assert_eq!(text.lines().last(), Some("4 passed, 4 failed"), "{text}");
    assert_eq!(code, Some(1), "failures outside the allow-list: {text}");
    assert!(out_dir.join("runtime-tools/bad.log").exists());
    let tsv = std::fs::read_to_string(out_dir.join("results.tsv")).unwrap();
    assert!(
        tsv.contains("runtime-tools/crash\tallowed\tthe suite's own bug"),
        "{tsv}"
    );
    assert!(
        !Path::new("/run/x").exists(),
        "a test wrote the host's /run"
    );
    // Only allowed failures: exit 0.
    let (code, text) = run(&["--only", "good,crash,isolated"]);
    assert_eq!(text.lines().last(), Some("2 passed, 1 failed"), "{text}");
    assert_eq!(code, Some(0), "{text}");
}
