//! The `fanout` binary: flags → `server::start` → wait for SIGTERM/SIGINT → exit code.

use std::process::ExitCode;

use clap::Parser;
use fanout::config::{Args, Config, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::resolve(args, std::env::var("PORT").ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.log_format);
    if config.redis_tls.insecure {
        tracing::warn!(
            "--redis-insecure: Redis's TLS certificate and host name are NOT verified; anyone on the network path can read and change the traffic. For tests only."
        );
    }
    // The URL may carry a password: logged redacted.
    let mode = config
        .redis
        .as_deref()
        .map(fanout::redis::url::redact)
        .unwrap_or_else(|| "embedded".into());
    let (shards, server_id) = (config.shards, config.server_id.clone());
    let shutdown_timeout = config.shutdown_timeout;
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let server = match fanout::server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = %server.local_addr, shards, server_id, broker = %mode, "fanout started");
    // One machine-readable line on stdout, for scripts and tests.
    println!("listening {}", server.local_addr);
    let mut signals = signals;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    server.shutdown();
    // The shards give up on slow clients at the deadline; this is the backstop.
    std::thread::spawn(move || {
        std::thread::sleep(shutdown_timeout + std::time::Duration::from_secs(1));
        tracing::warn!("shutdown deadline passed: exiting");
        std::process::exit(0);
    });
    server.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}
