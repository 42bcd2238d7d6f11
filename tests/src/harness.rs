//! The whole bridge in one test: its own NATS namespace (so tests run in
//! parallel and never see each other's messages), the fakes of Lark and
//! FastGPT on random ports, and the three services as tasks built from a real
//! TOML configuration, each on port 0. `stop()` shuts them down the graceful
//! way and deletes the namespace's streams and buckets.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use common::config::Settings;
use common::lark::crypto::EncryptKey;
use common::topology::Topology;
use secrecy::SecretString;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fake_fastgpt::FakeFastGpt;
use crate::fake_lark::{FakeApp, FakeLark};
use crate::lark_events::{random_hex, EventBuilder, SignedRequest};

pub const CHANNEL: &str = "support";
pub const APP_ID: &str = "cli_test_app";
pub const APP_SECRET: &str = "test-app-secret";
pub const ENCRYPT_KEY: &str = "test-encrypt-key";
pub const VERIFICATION_TOKEN: &str = "test-verification-token";
pub const BOT_OPEN_ID: &str = "ou_test_bot";
pub const FASTGPT_KEY: &str = "fastgpt-test-key";

/// The NATS server the tests use (`NATS_URL`, default the local one).
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Logs of the services go to the test's captured output.
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Which services to run, and how.
#[derive(Clone)]
pub struct Options {
    pub ingress: bool,
    pub relays: usize,
    pub responders: usize,
    pub encrypt: bool,
    /// Overrides as the process environment would give them, e.g.
    /// `("LARK_BRIDGE__RELAY__MAX_ATTEMPTS", "3")`.
    pub env: Vec<(&'static str, String)>,
    /// JetStream's ack wait of the work-queue consumers (default
    /// `topology::ACK_WAIT`): set short, a test sees a redelivery quickly.
    pub ack_wait: Option<Duration>,
    /// Time to live of the partition leases (default `topology::LEASE_TTL`).
    pub lease_ttl: Option<Duration>,
    /// The channel receives its events over the long connection (no encrypt
    /// key, no verification token): push them with `lark.push_event`.
    pub long_connection: bool,
    /// Answers stream into a CardKit card (the channel's `streaming`).
    pub streaming: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ingress: true,
            relays: 1,
            responders: 1,
            encrypt: true,
            env: Vec::new(),
            ack_wait: None,
            lease_ttl: None,
            long_connection: false,
            streaming: false,
        }
    }
}

pub struct Bridge {
    pub ns: String,
    pub settings: Settings,
    pub lark: FakeLark,
    pub fastgpt: FakeFastGpt,
    pub js: jetstream::Context,
    pub http: reqwest::Client,
    pub key: Option<EncryptKey>,
    pub ingress_addr: Option<SocketAddr>,
    pub service_addrs: Vec<(&'static str, SocketAddr)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Bridge {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        init_test_logs();
        remove_stale_test_namespaces().await;
        let ns = format!("t{}", random_hex(10));
        let app = FakeApp::new(APP_ID, APP_SECRET, BOT_OPEN_ID).with_verification_token(VERIFICATION_TOKEN);
        let lark = FakeLark::start(vec![app]).await;
        let fastgpt = FakeFastGpt::start(FASTGPT_KEY).await;
        let mut toml = config_toml(&nats_url(), &ns, &lark.base_url(), &fastgpt.base_url(), opts.encrypt);
        if opts.long_connection {
            toml = long_connection_toml(&toml);
        }
        if opts.streaming {
            toml = toml.replace("streaming = false", "streaming = true");
        }
        let env = opts.env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let settings = Settings::from_toml_with_env(&toml, &env).expect("test configuration is valid");
        let client = async_nats::connect(nats_url()).await.expect("NATS runs for the tests (deploy/test starts it)");
        let js = jetstream::new(client);
        let shutdown = CancellationToken::new();
        let mut bridge = Self {
            ns,
            settings: settings.clone(),
            lark,
            fastgpt,
            js,
            http: reqwest::Client::new(),
            key: (opts.encrypt && !opts.long_connection)
                .then(|| EncryptKey::new(SecretString::from(ENCRYPT_KEY.to_owned()))),
            ingress_addr: None,
            service_addrs: Vec::new(),
            shutdown,
            tasks: Vec::new(),
        };
        if opts.ack_wait.is_some() || opts.lease_ttl.is_some() {
            prepare_work_queues(&bridge.js, &bridge.topology(), opts.ack_wait, opts.lease_ttl).await;
        }
        if opts.ingress {
            bridge.spawn_ingress().await;
        }
        for _ in 0..opts.relays {
            bridge.spawn_relay().await;
        }
        for _ in 0..opts.responders {
            bridge.spawn_responder().await;
        }
        bridge
    }

    pub async fn spawn_ingress(&mut self) {
        let app = ingress::Application::build(self.settings.clone()).await.expect("ingress starts");
        self.ingress_addr = Some(app.local_addr());
        self.service_addrs.push(("ingress", app.local_addr()));
        let stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            let _ = app.run_until_stopped(stop).await;
        }));
        // Ready once its streams exist.
        let what = "the ingress becomes ready";
        crate::readiness::readyz_becomes(&self.http, &self.url("/readyz"), 200, Duration::from_secs(5), what).await;
    }

    pub async fn spawn_relay(&mut self) {
        let app = relay::Application::build(self.settings.clone(), &self.shutdown).await.expect("relay starts");
        self.service_addrs.push(("relay", app.local_addr()));
        let stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(app.run_until_stopped(stop)));
    }

    pub async fn spawn_responder(&mut self) {
        let app = responder::Application::build(self.settings.clone(), &self.shutdown).await.expect("responder starts");
        self.service_addrs.push(("responder", app.local_addr()));
        let stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(app.run_until_stopped(stop)));
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.settings.nats)
    }

    /// Builds events for the test app.
    pub fn events(&self) -> EventBuilder {
        EventBuilder::new(APP_ID).token(VERIFICATION_TOKEN)
    }

    pub fn events_url(&self) -> String {
        self.url(&format!("/lark/{CHANNEL}/events"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingress_addr.expect("ingress runs in this test"))
    }

    /// Sends an event as Lark does (encrypted and signed when the channel has a key).
    pub async fn deliver(&self, event: &Value) -> reqwest::Response {
        self.lark.deliver(&self.events_url(), event, self.key.as_ref()).await.expect("ingress answers")
    }

    /// Sends an event and asserts Lark would see 200.
    pub async fn deliver_ok(&self, event: &Value) {
        let resp = self.deliver(event).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "ingress refused the event: {body}");
    }

    /// A request signed like Lark's, for tests that tamper with it.
    pub fn signed(&self, event: &Value) -> SignedRequest {
        SignedRequest::now(event, self.key.as_ref())
    }

    /// Messages stored in a stream of this namespace.
    pub async fn stream_len(&self, stream: &str) -> u64 {
        let mut s = self.js.get_stream(stream).await.expect("stream exists");
        s.info().await.expect("stream info").state.messages
    }

    /// Stops the services gracefully, then deletes the namespace from NATS.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        delete_namespace(&self.js, &Topology::new(&self.settings.nats)).await;
    }
}

/// Creates the streams, the partition consumers with `ack_wait` and the
/// lease bucket with `lease_ttl` before any service does: the services use
/// them as they find them.
pub async fn prepare_work_queues(
    js: &jetstream::Context,
    t: &Topology,
    ack_wait: Option<Duration>,
    lease_ttl: Option<Duration>,
) {
    use common::topology::{Queue, ACK_WAIT, LEASE_TTL};
    t.ensure_streams(js).await.expect("streams");
    for q in [Queue::Events, Queue::Replies] {
        t.partition_consumers(js, q, ack_wait.unwrap_or(ACK_WAIT)).await.expect("partition consumers");
    }
    t.leases(js, lease_ttl.unwrap_or(LEASE_TTL)).await.expect("lease bucket");
}

/// Deletes every stream and bucket of a test's namespace.
pub async fn delete_namespace(js: &jetstream::Context, t: &Topology) {
    // Every stream, and every bucket as its stream.
    for cfg in t.all_configs() {
        let _ = js.delete_stream(&cfg.name).await;
    }
}

/// Test namespaces (`t` and 20 hex digits) left behind by a test that
/// panicked or was killed more than [`STALE_AFTER`] ago: their streams are
/// deleted, once per test process, so the shared server's JetStream storage
/// (each stream reserves its size limit) does not fill up run after run.
pub async fn remove_stale_test_namespaces() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let Ok(client) = async_nats::connect(nats_url()).await else { return };
        let js = jetstream::new(client);
        let mut names = js.stream_names();
        let mut stale = Vec::new();
        while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
            if is_test_stream(&name) {
                stale.push(name);
            }
        }
        let cutoff = time::OffsetDateTime::now_utc() - STALE_AFTER;
        for name in stale {
            let Ok(mut stream) = js.get_stream(&name).await else { continue };
            if stream.info().await.is_ok_and(|i| i.created < cutoff) {
                let _ = js.delete_stream(&name).await;
            }
        }
    })
    .await;
}

/// How old a test namespace must be to count as left behind: no test runs
/// this long.
const STALE_AFTER: Duration = Duration::from_secs(3 * 3600);

/// `t` + 20 hex digits + `_`, or the same behind `KV_` (a bucket's stream).
/// A stream (or a bucket's or object store's stream) of a test namespace:
/// `t` (in-process bridges) or `p` (process bridges) and 20 hex digits, or
/// `c` (`--check` tests) and 16.
fn is_test_stream(name: &str) -> bool {
    let ns = name.strip_prefix("KV_").or_else(|| name.strip_prefix("OBJ_")).unwrap_or(name);
    let digits = match ns.as_bytes().first() {
        Some(b't' | b'p') => 20,
        Some(b'c') => 16,
        _ => return false,
    };
    let rest = &ns[1..];
    rest.len() > digits + 1 && rest.as_bytes()[digits] == b'_' && rest[..digits].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `toml` with its channel on the long connection: no encrypt key or
/// verification token, `subscription = "long_connection"`.
pub fn long_connection_toml(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.starts_with("encrypt_key =") && !l.starts_with("verification_token ="))
        .map(|l| match l.starts_with("app_id =") {
            true => format!("{l}\nsubscription = \"long_connection\""),
            false => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configuration a test runs with: the real TOML contract.
pub fn config_toml(nats: &str, ns: &str, lark: &str, fastgpt: &str, encrypt: bool) -> String {
    let encrypt_key = if encrypt { format!("encrypt_key = \"{ENCRYPT_KEY}\"\n") } else { String::new() };
    format!(
        r#"
[nats]
url = "{nats}"
namespace = "{ns}"
# Small: JetStream reserves each limit on disk, and tests run side by side.
events_max_bytes = 67108864
replies_max_bytes = 67108864
dead_max_bytes = 16777216
bucket_max_bytes = 8388608

[ingress]
listen = "127.0.0.1:0"

[relay]
listen = "127.0.0.1:0"
shutdown_grace_secs = 2

[responder]
listen = "127.0.0.1:0"
shutdown_grace_secs = 2

[telemetry]
log_format = "text"

[[channels]]
id = "{CHANNEL}"
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
{encrypt_key}verification_token = "{VERIFICATION_TOKEN}"
lark_base_url = "{lark}"
fastgpt_base_url = "{fastgpt}"
fastgpt_api_key = "{FASTGPT_KEY}"
# Whole answers, as most suites expect; the streaming suite turns it on
# (`Options::streaming`).
streaming = false
# Answers without the 👍 / 👎 buttons, so most suites see plain text; the
# feedback suite turns them on (LARK_BRIDGE__CHANNELS__SUPPORT__FEEDBACK).
feedback = false
"#,
    )
}

#[cfg(test)]
mod tests {
    use super::is_test_stream;

    #[test]
    fn test_namespaces_are_told_apart() {
        for name in [
            "t0123456789abcdef0123_events",
            "KV_t0123456789abcdef0123_cards",
            "OBJ_t0123456789abcdef0123_files",
            "pd3434834da98c5e57094_replies",
            "KV_c0123456789abcdef_status",
        ] {
            assert!(is_test_stream(name), "{name}");
        }
        for name in ["sandbox_events", "larkbridge_dead", "KV_sandbox_cards", "t0123_events", "bench_e_1_events"] {
            assert!(!is_test_stream(name), "{name}");
        }
    }
}
