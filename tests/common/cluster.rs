//! A real Redis Cluster for one test: six `redis-server --cluster-enabled yes` processes
//! on free ports (node timeout 1 s, so failover tests are quick), joined with
//! `redis-cli --cluster create … --cluster-replicas 1` (three primaries, three replicas),
//! ready once every node says `cluster_state:ok` and every replica is in sync. Killed and cleaned up on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use fanout::redis::resp::{self, Value};

use super::{free_port, resp_command, wait_for, DEADLINE};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts six nodes and creates the cluster (about 2 s).
    pub fn start() -> RedisCluster {
        Self::start_with(|_| Vec::new())
    }

    /// `start`, each node given the extra arguments `extra(i)`.
    pub fn start_with(extra: impl Fn(usize) -> Vec<String>) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "fanout-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let children = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                Some(
                    Command::new("redis-server")
                        .args(extra(i))
                        .current_dir(&dir)
                        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--cluster-enabled", "yes"])
                        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                        .args(["--cluster-node-timeout", "1000"])
                        .args(["--save", "", "--appendonly", "no"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server must be installed"),
                )
            })
            .collect();
        let cluster = RedisCluster {
            ports,
            children,
            dir,
        };
        for &port in &cluster.ports {
            wait_for("a cluster node to answer PING", DEADLINE, || {
                let v = command(port, &["PING"]).ok()?;
                matches!(v, Value::Simple(_)).then_some(())
            });
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for &port in &cluster.ports {
            wait_for("cluster_state:ok", DEADLINE, || {
                let info = text(&command(port, &["CLUSTER", "INFO"]).ok()?)?;
                info.contains("cluster_state:ok").then_some(())
            });
        }
        // A replica that never finished its first sync will not take over from its
        // primary (its data is too old): failover tests need them all in sync.
        for &port in &cluster.ports {
            wait_for("every node a synced primary or replica", DEADLINE, || {
                let info = text(&command(port, &["INFO", "replication"]).ok()?)?;
                (info.contains("role:master\r\nconnected_slaves:1")
                    || info.contains("master_link_status:up"))
                .then_some(())
            });
        }
        cluster
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one command to the node on `port` and returns its reply, decoded by fanout's own
/// RESP decoder (so replies are the `Value`s the node code sees).
pub fn command(port: u16, args: &[&str]) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&resp_command(args))?;
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(v) = resp::decode(&mut buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.0))?
        {
            return Ok(v);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A bulk or simple string reply as text.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bulk(b) | Value::Simple(b) | Value::Error(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}
