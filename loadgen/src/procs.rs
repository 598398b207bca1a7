//! Child loadgen processes (`--procs N`): spawning `loadgen <same args> --child i/N`,
//! and a line protocol over their stdin/stdout (READY / GO / PROG / FIN / RESULT).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ns;

/// One child process.
pub struct Kid {
    pub index: usize,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    prog: Arc<[AtomicU64; 3]>,
}

/// Spawn `n` children running this executable with our own arguments plus `--child i/n`.
pub fn spawn(n: usize) -> Result<Vec<Kid>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    (0..n)
        .map(|i| {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg("--child")
                .arg(format!("{i}/{n}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn child: {e}"))?;
            let stdin = child.stdin.take().ok_or("no child stdin")?;
            let stdout = child.stdout.take().ok_or("no child stdout")?;
            let (tx, rx) = mpsc::channel();
            let prog: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
            let p2 = prog.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("PROG ") {
                        for (slot, v) in p2.iter().zip(rest.split_whitespace()) {
                            slot.store(v.parse().unwrap_or(0), Ordering::Relaxed);
                        }
                    } else if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Ok(Kid {
                index: i,
                child,
                stdin,
                lines: rx,
                prog,
            })
        })
        .collect()
}

impl Kid {
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("child {}: {e}", self.index))
    }

    /// Wait for a line starting with `tag` and return the rest; fails on `FAIL`, on
    /// child exit, or at `deadline`.
    pub fn expect(&mut self, tag: &str, deadline: u64) -> Result<String, String> {
        loop {
            let now = now_ns();
            if now >= deadline {
                return Err(format!("child {}: timed out waiting for {tag}", self.index));
            }
            let wait = Duration::from_nanos((deadline - now).min(3_600_000_000_000));
            match self.lines.recv_timeout(wait) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(tag) {
                        return Ok(rest.trim().to_string());
                    }
                    if let Some(msg) = l.strip_prefix("FAIL") {
                        return Err(format!("child {}: {}", self.index, msg.trim()));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("child {} exited before {tag}", self.index))
                }
            }
        }
    }

    /// Latest PROG counters.
    pub fn progress(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.prog[i].load(Ordering::Relaxed))
    }

    pub fn progress_arc(&self) -> Arc<[AtomicU64; 3]> {
        self.prog.clone()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parse `--child i/n`.
pub fn parse_child(s: &str) -> Option<(usize, usize)> {
    let (a, b) = s.split_once('/')?;
    let (i, n) = (a.parse().ok()?, b.parse().ok()?);
    (n > 0 && i < n).then_some((i, n))
}
