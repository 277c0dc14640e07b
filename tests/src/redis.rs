//! A real redis-server on a free loopback port with AOF on, restartable on the same port and
//! data directory (to test a Redis restart), stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `appendfsync` policy: "always" or "everysec".
    pub appendfsync: &'static str,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with("always")
    }

    pub fn start_with(appendfsync: &'static str) -> Self {
        let mut me =
            Self { port: crate::reserve_port(), dir: tempfile::tempdir().unwrap(), child: None, appendfsync };
        me.run();
        me
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", self.appendfsync])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-test-deps.sh)");
        self.child = Some(child);
        crate::wait_for("redis-server to answer", Duration::from_secs(15), || self.ping().then_some(()));
    }

    /// PING over a raw connection.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The store section of a gateway config using this server.
    pub fn store_yaml(&self) -> String {
        format!("store: {{redis: {{url: \"{}\"}}}}\n", self.url())
    }

    /// SIGKILL: Redis dies without a clean shutdown (the AOF is what survives).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
