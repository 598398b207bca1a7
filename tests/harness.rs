//! The test harness guards itself: a test that restarts Redis on the same port must be
//! talking to the redis-server it started, not one left behind or started by someone else.

mod common;

use std::process::{Child, Command, Stdio};

use common::RedisProcess;

/// Kills a redis-server this test started by hand, also when the test panics.
struct Foreign(Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[should_panic(expected = "not the one this test started")]
fn restart_refuses_a_foreign_redis_on_its_port() {
    let mut redis = RedisProcess::start();
    redis.assert_own();
    redis.kill();
    // Someone else takes the port while ours is down.
    let _foreign = Foreign(
        Command::new("redis-server")
            .args([
                "--port",
                &redis.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_for("the foreign redis to listen", common::DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", redis.port)).ok()
    });
    // Ours cannot bind; PING is answered by the foreign one; restart must notice.
    redis.restart();
}
