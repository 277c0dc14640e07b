//! The real `postern-gateway` binary, started from a config the test writes, on ports the OS
//! picks. Its JSON log lines are collected; the bound addresses are read from them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tempfile::TempDir;

use serde_json::Value;

/// The binary built by `cargo build --workspace --bins` (scripts/test.sh does that first).
pub fn binary() -> PathBuf {
    workspace_binary("postern-gateway")
}

/// `postern-operator`, built the same way.
pub fn operator_binary() -> PathBuf {
    workspace_binary("postern-operator")
}

/// A gateway config that quarantines what fails SPF softly (spam policy `p`) for `served.test`
/// (accounts `accounts`, delivered to `sink_host`), resolving through `dns`; `more` changes
/// the rest.
pub fn quarantining(
    dns: std::net::SocketAddr,
    sink_host: &str,
    accounts: &[&str],
    more: impl FnOnce(&mut postern_api::GatewayConfig),
) -> GatewayConfig {
    use postern_api::{Account, Action, Destination, MailDomainConfig, SpamPolicyConfig, TlsPolicy};
    let sink_host = sink_host.to_string();
    let accounts: Vec<Account> =
        accounts.iter().map(|a| Account { address: a.to_string(), aliases: vec![] }).collect();
    GatewayConfig::typed(move |c| {
        c.delivery.nameservers = vec![dns];
        let mut p = SpamPolicyConfig::default();
        p.spf.soft_fail = Action::Quarantine;
        c.spam_policies.insert("p".into(), p);
        let mut served =
            MailDomainConfig::new("served.test", Destination::hosts(&[&sink_host], TlsPolicy::NONE));
        served.spam_policy = Some("p".into());
        served.accounts = accounts;
        c.domains.push(served);
        more(c);
    })
}

/// `kubectl-postern`, built the same way.
pub fn kubectl_plugin_binary() -> PathBuf {
    workspace_binary("kubectl-postern")
}

fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, done by scripts/test.sh)",
        bin.display()
    );
    bin
}

/// Standard parts of a test config; the test adds what it is about. Its directory (config
/// file, store) lives as long as the config or any gateway started from it.
pub struct GatewayConfig {
    pub dir: Arc<TempDir>,
    /// YAML appended to the generated header (domains, relay, delivery, limits...).
    pub body: String,
    /// YAML for `listeners:`; default one plain listener named "smtp".
    pub listeners: String,
    /// `logging.format`: "json" (default) or "text".
    pub log_format: &'static str,
    /// The config, when it was built typed (`typed`); `log_format` still applies to it.
    typed: Option<postern_api::GatewayConfig>,
}

impl GatewayConfig {
    pub fn new(body: &str) -> Self {
        Self {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            body: body.to_string(),
            listeners: "  - {name: smtp, address: \"127.0.0.1:0\"}\n".into(),
            log_format: "json",
            typed: None,
        }
    }

    /// A config built as the typed `postern_api::GatewayConfig`, for tests about behaviour:
    /// `edit` changes the standard base (one plain listener "smtp", admin and embedded store on
    /// loopback and in this config's directory, JSON logs). The result is validated as the
    /// gateway will validate it, so a test cannot start from a config the gateway refuses.
    pub fn typed(edit: impl FnOnce(&mut postern_api::GatewayConfig)) -> Self {
        let mut me = Self::new("");
        let mut config = postern_api::load_gateway_config(&me.text()).expect("the base config is valid");
        edit(&mut config);
        if let Err(errors) = postern_api::validate(&config) {
            panic!("the test's config is invalid: {errors:?}");
        }
        me.typed = Some(config);
        me
    }

    /// Text logs instead of JSON (each line is still parsed into `logs()`, with the raw line
    /// under "raw").
    pub fn with_text_logs(mut self) -> Self {
        self.log_format = "text";
        self
    }

    pub fn with_listeners(mut self, listeners: &str) -> Self {
        assert!(self.typed.is_none(), "a typed config sets its listeners in `typed`");
        self.listeners = listeners.to_string();
        self
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn text(&self) -> String {
        if let Some(typed) = &self.typed {
            let mut config = typed.clone();
            if self.log_format == "text" {
                config.logging.format = postern_api::LogFormat::Text;
            }
            return serde_yaml::to_string(&config).unwrap();
        }
        let store =
            format!("store: {{embedded: {{path: \"{}\"}}}}\n", self.dir.path().join("store").display());
        format!(
            "hostname: gw.test\nlisteners:\n{}admin: {{address: \"127.0.0.1:0\"}}\n{store}logging: {{format: {}, level: \"info\"}}\n{}",
            self.listeners, self.log_format, self.body
        )
    }

    pub fn write(&self) -> PathBuf {
        let p = self.path();
        std::fs::write(&p, self.text()).unwrap();
        p
    }
}

pub struct GatewayProcess {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    _dir: Option<Arc<TempDir>>,
}

impl GatewayProcess {
    /// Writes the config and starts the gateway; returns once every listener is bound.
    pub fn start(config: &GatewayConfig) -> Self {
        let path = config.write();
        let mut gw = Self::start_from(&path);
        gw._dir = Some(config.dir.clone());
        gw
    }

    pub fn start_from(path: &Path) -> Self {
        let mut child = Command::new(binary())
            .args(["run", "--config"])
            .arg(path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start postern-gateway");
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stdout = child.stdout.take().unwrap();
        {
            let logs = logs.clone();
            let echo = std::env::var_os("POSTERN_TEST_LOG").is_some();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if echo {
                        eprintln!("gateway: {line}");
                    }
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => logs.lock().unwrap().push(v),
                        Err(_) => logs.lock().unwrap().push(parse_text_line(&line)),
                    }
                }
            });
        }
        let mut gw = Self {
            child,
            logs,
            listeners: HashMap::new(),
            admin: "0.0.0.0:0".parse().unwrap(),
            config_path: path.into(),
            _dir: None,
        };
        crate::wait_for("the gateway to start", Duration::from_secs(30), || {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("postern-gateway exited during start-up: {status}");
            }
            gw.log_contains("postern-gateway started").then_some(())
        });
        for entry in gw.logs_matching("listening") {
            let name = entry["listener"].as_str().unwrap_or_default().to_string();
            let addr: SocketAddr = entry["address"].as_str().unwrap().parse().unwrap();
            if name == "admin" {
                gw.admin = addr;
            } else {
                gw.listeners.insert(name, addr);
            }
        }
        gw
    }

    /// The address of the listener named "smtp".
    pub fn smtp(&self) -> SocketAddr {
        self.listeners["smtp"]
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Log entries whose message is `message`.
    pub fn logs_matching(&self, message: &str) -> Vec<Value> {
        self.logs().into_iter().filter(|v| v["message"] == message).collect()
    }

    pub fn log_contains(&self, message: &str) -> bool {
        self.logs().iter().any(|v| v["message"] == message)
    }

    pub fn wait_log(&self, message: &str, timeout: Duration) -> Value {
        crate::wait_for(&format!("log line {message:?}"), timeout, || self.logs_matching(message).pop())
    }

    /// The gateway's process id (to read its memory use from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the gateway process, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGKILL: the crash case. Nothing is flushed or closed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        crate::wait_for("the gateway to exit", Duration::from_secs(40), || {
            self.child.try_wait().ok().flatten()
        })
        .success()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET on the admin port; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// Any method on the admin port; returns (status, body).
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin, method, path)
    }

    /// Waits until the queue holds no job: every accepted message was delivered or bounced
    /// (a DSN is queued in the same step that settles its job). From then on nothing more
    /// reaches a next hop unless something new is accepted: the deterministic end of a test
    /// that checks that nothing more arrives.
    pub fn wait_idle(&self) {
        self.wait_idle_with(admin_client(self.admin));
    }

    /// `wait_idle` for a gateway whose admin API wants a token (one of `admin.tokenFile`'s).
    pub fn wait_idle_as(&self, token: &str) {
        self.wait_idle_with(admin_client(self.admin).with_token(token));
    }

    fn wait_idle_with(&self, client: postern_admin_client::AdminClient) {
        crate::wait_for("an empty queue", Duration::from_secs(30), || {
            let stats = crate::admin::block_on(client.queue()).ok()?;
            (stats.jobs == 0).then_some(())
        });
    }

    /// The admin address, for the CLI's `--admin`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The value of one Prometheus sample, e.g. `postern_messages_total{outcome="queued",reason="accepted"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics");
        body.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One text log line (`<time> <LEVEL> <message> key=value key="quoted value"`) as the JSON
/// log's shape: "message", the fields, and the line itself under "raw".
fn parse_text_line(line: &str) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("raw".into(), Value::String(line.into()));
    let mut words = line.split(' ').filter(|w| !w.is_empty()).skip(2).peekable();
    let is_field = |w: &str| {
        w.split_once('=')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    };
    let mut message = Vec::new();
    while let Some(w) = words.next_if(|w| !is_field(w)) {
        message.push(w);
    }
    out.insert("message".into(), Value::String(message.join(" ")));
    let rest: Vec<&str> = words.collect();
    let rest = rest.join(" ");
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|e| match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        e => e,
                    })),
                    '"' => break,
                    c => value.push(c),
                }
            }
            chars.next_if_eq(&' ');
        } else {
            value = chars.by_ref().take_while(|&c| c != ' ').collect();
        }
        out.insert(key.trim().to_string(), Value::String(value));
    }
    Value::Object(out)
}

/// A GET on an admin API (`(status, body)`), through the typed admin client.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

/// Any request without a body on an admin API, through the typed admin client's raw call.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let answer = crate::admin::block_on(admin_client(addr).raw(method, path)).unwrap();
    (answer.status, answer.text())
}

/// The typed admin client for a gateway's admin address.
pub fn admin_client(addr: SocketAddr) -> postern_admin_client::AdminClient {
    postern_admin_client::AdminClient::with_timeout(&addr.to_string(), Duration::from_secs(10))
}
