//! Starting a node: settings a newcomer writes (TOML arrays, JSON logs) are accepted, and
//! out-of-range values stop the start with a clear message instead of overflowing later.

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{wait_for, TestNode, DEADLINE};
use support::{refused_status, ws_with_headers};

/// Runs `fanout ARGS` expecting it to refuse to start: its exit code and stderr.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fanout");
    let status = wait_for("fanout to refuse to start", DEADLINE, || {
        child.try_wait().ok().flatten()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn out_of_range_flags_stop_the_start_with_a_clear_message() {
    for (flag, value, bound) in [
        ("--presence-ttl", "18446744073709551615", "86400"),
        ("--presence-ttl", "86401", "86400"),
        ("--ping-interval", "4294967296", "86400"),
        ("--outbound-limit", "18446744073709551615", "1073741824"),
        ("--max-subscriptions", "0", "1048576"),
    ] {
        let (code, err) = refused_start(&[flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("{flag} must be between")) && err.contains(bound),
            "{flag} {value}: {err}"
        );
    }
}

#[test]
fn a_toml_array_of_allowed_origins_is_accepted() {
    let path = std::env::temp_dir().join(format!("fanout-startup-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "allowed_origins = [\"https://a.example\", \"https://b.example\"]\n",
    )
    .unwrap();
    let node = TestNode::start(&["--config", path.to_str().unwrap()]);
    let url = node.url();
    for ok in ["https://a.example", "https://b.example"] {
        ws_with_headers(&url, &[("Origin", ok)]).expect("listed origin allowed");
    }
    let e = ws_with_headers(&url, &[("Origin", "https://c.example")]).err();
    assert_eq!(refused_status(&e.expect("refused")), 403);
    let _ = std::fs::remove_file(path);
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fanout");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(line)) = BufReader::new(stderr).lines().next() {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a log line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "fanout started", "{v}");
    assert!(v["fields"]["addr"].is_string(), "{v}");
}
