//! Integration: `loadgen churn-deliveries` against a real fanout node (embedded mode,
//! `--history-size 1000`, started in this process from the fanout library): with
//! `--resume` every subscriber gets every message exactly once and in order although it
//! keeps dropping its connection; the same churn without `--resume` loses messages, so
//! the churn really happens inside the publishing window and the check has teeth.

mod run;

use clap::Parser;
use run::loadgen;
use serde_json::Value;

fn start_fanout() -> fanout::server::ServerHandle {
    let args = fanout::config::Args::parse_from([
        "fanout",
        "--listen",
        "127.0.0.1:0",
        "--history-size",
        "1000",
        "--shards",
        "2",
    ]);
    let config = fanout::config::Config::resolve(args, None).expect("config");
    fanout::server::start(config).expect("fanout starts")
}

fn churn(url: &str, extra: &[&str]) -> Value {
    let me = std::process::id().to_string();
    let mut args = vec![
        "churn-deliveries",
        "--url",
        url,
        "--subs",
        "40",
        "--channels",
        "4",
        "--subs-per-conn",
        "2",
        "--pubs",
        "2",
        "--rate",
        "400",
        "--duration",
        "2.5",
        "--drop-every",
        "0.5",
        "--offline",
        "0.05..0.3",
        "--server-pid",
        &me,
    ];
    args.extend_from_slice(extra);
    loadgen(&args)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn resume_delivers_everything_exactly_once_and_plain_reconnect_does_not() {
    let node = start_fanout();
    let url = format!("ws://{}/", node.local_addr);

    let r = churn(&url, &["--resume"]);
    assert_eq!(u(&r, "subscribed"), 40, "{r}");
    assert!(u(&r, "published") >= 900, "{r}");
    // Every subscriber dropped several times, and every reconnect resumed with since.
    assert!(u(&r, "drops") >= 80, "{r}");
    assert_eq!(u(&r, "resubscribes_since"), 2 * u(&r, "reconnects"), "{r}");
    assert_eq!(u(&r, "resumes_without_offset"), 0, "{r}");
    assert_eq!(u(&r, "delivered"), u(&r, "expected"), "{r}");
    assert_eq!(r["delivery_ratio_pct"].as_f64(), Some(100.0), "{r}");
    for k in [
        "lost",
        "duplicates",
        "reordered",
        "gaps",
        "incomplete_subs",
        "offline_at_end",
        "error_frames",
        "unparsed_frames",
        "foreign_deliveries",
        "publish_errors",
        "setup_errors",
    ] {
        assert_eq!(u(&r, k), 0, "{k} in {r}");
    }
    assert!(r["server_cpu_s"].as_f64().is_some(), "{r}");

    // The same churn without resume: what the subscribers missed while away is gone.
    let r = churn(&url, &["--drain", "1"]);
    assert!(u(&r, "drops") >= 80, "{r}");
    assert_eq!(u(&r, "resubscribes_since"), 0, "{r}");
    assert!(u(&r, "lost") > 0, "{r}");
    assert!(
        r["delivery_ratio_pct"].as_f64().expect("ratio") < 100.0,
        "{r}"
    );
    assert_eq!(u(&r, "duplicates"), 0, "{r}");
    node.shutdown();
}
