//! Running the loadgen binary as a user would: `--json --quiet` added, the exit status
//! checked (stderr in the failure message), the last stdout line parsed as its report.

use std::process::Command;

use serde_json::Value;

/// `loadgen ARGS --json --quiet`; its JSON report. Panics, with stderr, if it failed.
pub fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).expect("JSON output")
}
