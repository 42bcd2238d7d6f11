//! The bridge as real processes: the three services' own `main.rs` (built as
//! this crate's `lb-*` binaries), each with JSON logs captured line by line,
//! fixed ports so a restarted service comes back where it was, and the fakes
//! of Lark and FastGPT in the test. Used where the process boundary matters:
//! traces across services, metrics of one process, kills and restarts.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use common::config::Settings;
use common::lark::crypto::EncryptKey;
use common::topology::Topology;
use lark_bridge_tests::fake_fastgpt::FakeFastGpt;
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark};
use lark_bridge_tests::harness::{
    config_toml, delete_namespace, nats_url, APP_ID, APP_SECRET, BOT_OPEN_ID, CHANNEL, ENCRYPT_KEY, FASTGPT_KEY,
    VERIFICATION_TOKEN,
};
use lark_bridge_tests::lark_events::{random_hex, EventBuilder};
use lark_bridge_tests::ports::free_port;
use lark_bridge_tests::readiness::readyz_becomes;
use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use common::service_name::Service;

/// The service's binary, as Cargo built it for these tests.
fn binary(service: Service) -> &'static str {
    match service {
        Service::Ingress => env!("CARGO_BIN_EXE_lb-ingress"),
        Service::Relay => env!("CARGO_BIN_EXE_lb-relay"),
        Service::Responder => env!("CARGO_BIN_EXE_lb-responder"),
    }
}

struct Running {
    service: Service,
    child: Child,
}

pub struct ProcBridge {
    pub settings: Settings,
    pub lark: FakeLark,
    pub fastgpt: FakeFastGpt,
    pub js: jetstream::Context,
    pub http: reqwest::Client,
    pub key: EncryptKey,
    config: tempfile::NamedTempFile,
    ports: [u16; 3],
    env: Vec<(String, String)>,
    running: Vec<Running>,
    /// Every stdout line of every process started, with its service.
    lines: Arc<Mutex<Vec<(Service, String)>>>,
}

impl ProcBridge {
    /// Starts the fakes and the three services; `env` is given to every process.
    pub async fn start(env: Vec<(String, String)>) -> Self {
        Self::start_on(&nats_url(), env).await
    }

    /// The same, against the NATS server(s) at `nats` (a URL, or several
    /// separated by commas). `settings` holds what the processes read,
    /// `LARK_BRIDGE__*` overrides in `env` included.
    pub async fn start_on(nats: &str, env: Vec<(String, String)>) -> Self {
        let ns = format!("p{}", random_hex(10));
        let app = FakeApp::new(APP_ID, APP_SECRET, BOT_OPEN_ID).with_verification_token(VERIFICATION_TOKEN);
        let lark = FakeLark::start(vec![app]).await;
        let fastgpt = FakeFastGpt::start(FASTGPT_KEY).await;
        let toml = config_toml(nats, &ns, &lark.base_url(), &fastgpt.base_url(), true);
        let overrides = env.iter().filter(|(k, _)| k.starts_with("LARK_BRIDGE__")).cloned().collect();
        let settings = Settings::from_toml_with_env(&toml, &overrides).expect("valid configuration");
        let config = tempfile::NamedTempFile::new().expect("a temp file");
        std::fs::write(config.path(), toml).expect("config written");
        let servers = common::nats::server_addrs(nats).expect("NATS URLs");
        let js = jetstream::new(async_nats::connect(servers).await.expect("NATS runs for the tests"));
        let mut bridge = Self {
            settings,
            lark,
            fastgpt,
            js,
            http: reqwest::Client::new(),
            key: EncryptKey::new(SecretString::from(ENCRYPT_KEY.to_owned())),
            config,
            ports: [free_port(), free_port(), free_port()],
            env,
            running: Vec::new(),
            lines: Default::default(),
        };
        for s in Service::ALL {
            bridge.spawn(s).await;
        }
        bridge
    }

    fn port(&self, s: Service) -> u16 {
        self.ports[s as usize]
    }

    /// The process id of `s`, while it runs.
    pub fn pid(&self, s: Service) -> Option<u32> {
        self.running.iter().find(|r| r.service == s).and_then(|r| r.child.id())
    }

    pub fn addr(&self, s: Service) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(s)))
    }

    /// Starts `s` and waits until its `/readyz` answers 200.
    pub async fn spawn(&mut self, s: Service) {
        let mut cmd = Command::new(binary(s));
        cmd.arg("--config")
            .arg(self.config.path())
            .env("RUST_LOG", "info,async_nats=warn")
            .env("LARK_BRIDGE__TELEMETRY__LOG_FORMAT", "json")
            .env(format!("LARK_BRIDGE__{}__LISTEN", s.name().to_uppercase()), self.addr(s).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", s.name()));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = self.lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("lines").push((s, line));
            }
        });
        self.running.push(Running { service: s, child });
        self.wait_ready(s).await;
    }

    async fn wait_ready(&self, s: Service) {
        let url = format!("http://{}/readyz", self.addr(s));
        let what = format!("{} becomes ready", s.name());
        readyz_becomes(&self.http, &url, 200, Duration::from_secs(10), &what).await;
    }

    /// `kill -9`.
    pub async fn kill(&mut self, s: Service) {
        if let Some(i) = self.running.iter().position(|r| r.service == s) {
            let mut r = self.running.remove(i);
            let _ = r.child.kill().await;
        }
    }

    /// SIGTERM, and waits for the exit; returns how long it took.
    pub async fn terminate(&mut self, s: Service) -> Duration {
        let started = std::time::Instant::now();
        if let Some(i) = self.running.iter().position(|r| r.service == s) {
            let mut r = self.running.remove(i);
            if let Some(pid) = r.child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), r.child.wait()).await;
        }
        started.elapsed()
    }

    pub fn events(&self) -> EventBuilder {
        EventBuilder::new(APP_ID).token(VERIFICATION_TOKEN)
    }

    pub fn events_url(&self) -> String {
        format!("http://{}/lark/{CHANNEL}/events", self.addr(Service::Ingress))
    }

    pub async fn deliver(&self, event: &Value) -> Option<u16> {
        self.lark.deliver(&self.events_url(), event, Some(&self.key)).await.ok().map(|r| r.status().as_u16())
    }

    /// The JSON log lines of one service.
    pub fn logs(&self, s: Service) -> Vec<Value> {
        let lines = self.lines.lock().expect("lines");
        lines.iter().filter(|(svc, _)| *svc == s).filter_map(|(_, l)| serde_json::from_str(l).ok()).collect()
    }

    /// Every raw stdout line of every service.
    pub fn raw_logs(&self) -> Vec<String> {
        self.lines.lock().expect("lines").iter().map(|(_, l)| l.clone()).collect()
    }

    pub async fn metrics(&self, s: Service) -> String {
        let url = format!("http://{}/metrics", self.addr(s));
        self.http.get(url).send().await.expect("metrics answer").text().await.expect("metrics text")
    }

    pub async fn stop(mut self) {
        for s in Service::ALL {
            self.terminate(s).await;
        }
        delete_namespace(&self.js, &Topology::new(&self.settings.nats)).await;
    }
}
