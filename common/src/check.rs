//! `--check`: each service diagnoses its own dependencies and prints a
//! checklist with the fix for each failure, the troubleshooting list of the
//! README as a command. The exit code is 0 only when every check passed, so
//! scripts and init containers can use it.

use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream;

use crate::config::Settings;
use crate::topology::Topology;

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: String,
    pub ok: bool,
    /// Passes, but worth the operator's attention (shown as `warn`).
    pub warn: bool,
    pub detail: String,
    pub fix: Option<String>,
}

/// Checks that `service` has the secrets it needs ([`crate::secrets`]) and
/// returns the settings as that service holds them; `None` after a failure.
pub fn secrets(list: &mut Checklist, settings: &Settings, service: crate::service_name::Service) -> Option<Settings> {
    match settings.clone().for_service(service) {
        Ok(s) => Some(s),
        Err(e) => {
            list.fail(
                "secrets",
                e.to_string(),
                "see the table in README.md, \"Secrets\": each service needs only its own",
            );
            None
        }
    }
}

/// Whether files are on ([`crate::config::FilesSetup`]): when not, a warning
/// naming the keys to set (users then get a notice instead of an answer).
pub fn files(list: &mut Checklist, settings: &Settings) {
    match settings.files() {
        crate::config::FilesSetup::Enabled { public_url, .. } => list.pass(
            "files",
            format!(
                "on: FastGPT fetches the files users send from {}{}... (signed links, kept {} s, at most {} bytes in all)",
                public_url.as_str().trim_end_matches('/'),
                crate::file_link::ROUTE_PREFIX,
                settings.nats.files_max_age_secs,
                settings.nats.files_max_bytes
            ),
        ),
        crate::config::FilesSetup::Disabled { missing } => list.warn(
            "files",
            format!("off: {missing} not set, so a file a user sends gets a notice instead of an answer (images work)"),
            format!("{} (README.md, \"Images and files\")", settings.files_fix()),
        ),
    }
}

/// The result of `--check`.
#[derive(Debug, Clone)]
pub struct Checklist {
    pub title: String,
    pub items: Vec<Item>,
}

impl Checklist {
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), items: Vec::new() }
    }

    pub fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.items.push(Item { name: name.into(), ok: true, warn: false, detail: detail.into(), fix: None });
    }

    /// Passes, with a risk the operator should know about and how to remove it.
    pub fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.items.push(Item { name: name.into(), ok: true, warn: true, detail: detail.into(), fix: Some(fix.into()) });
    }

    pub fn fail(&mut self, name: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.items.push(Item {
            name: name.into(),
            ok: false,
            warn: false,
            detail: problem.into(),
            fix: Some(fix.into()),
        });
    }

    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }

    /// The checklist as a person reads it.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for i in &self.items {
            let mark = match (i.ok, i.warn) {
                (false, _) => "FAIL",
                (true, true) => "warn",
                (true, false) => "ok",
            };
            let _ = writeln!(out, "  [{mark}] {}: {}", i.name, i.detail);
            if let Some(fix) = &i.fix {
                let _ = writeln!(out, "         fix: {fix}");
            }
        }
        let failed = self.items.iter().filter(|i| !i.ok).count();
        let _ = writeln!(out, "{} passed, {} failed", self.items.len() - failed, failed);
        out
    }

    /// Prints the checklist and gives the process exit code.
    pub fn finish(self) -> std::process::ExitCode {
        print!("{}", self.render());
        if self.passed() {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    }
}

/// Connects to NATS (without waiting for it) and makes sure the streams exist.
pub async fn nats(list: &mut Checklist, settings: &Settings) -> Option<jetstream::Context> {
    // Shown without its password; connected to with it.
    let url = crate::nats_url::redact_url(&settings.nats.url);
    let mut opts = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(3));
    if let Some(path) = &settings.nats.credentials_file {
        match opts.credentials_file(path).await {
            Ok(o) => opts = o,
            Err(e) => {
                list.fail("NATS", format!("cannot read {}: {e}", path.display()), "fix nats.credentials_file");
                return None;
            }
        }
    }
    let servers = match crate::nats_url::server_addrs(&settings.nats.url) {
        Ok(s) => s,
        Err(e) => {
            list.fail("NATS", e.to_string(), "fix nats.url");
            return None;
        }
    };
    let client = match tokio::time::timeout(Duration::from_secs(5), opts.connect(servers)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            list.fail(
                "NATS",
                format!("cannot connect to {url}: {e}"),
                "start nats-server with JetStream (-js), or set nats.url / LARK_BRIDGE__NATS__URL to where it runs",
            );
            return None;
        }
        Err(_) => {
            list.fail(
                "NATS",
                format!("no answer from {url} within 5 s"),
                "check nats.url and the network path to NATS",
            );
            return None;
        }
    };
    let js = jetstream::new(client);
    let topology = Topology::new(&settings.nats);
    match tokio::time::timeout(Duration::from_secs(10), topology.ensure_streams(&js)).await {
        Ok(Ok(changed)) => {
            for (stream, change) in changed {
                list.pass(format!("stream {stream}"), format!("updated to the configuration: {change}"));
            }
            list.pass(
                "NATS",
                format!(
                    "{url}: JetStream streams {}, {}, {} ready",
                    topology.events_stream(),
                    topology.replies_stream(),
                    topology.dead_stream()
                ),
            );
            stream_usage(list, &js, &topology).await;
            Some(js)
        }
        Ok(Err(e)) => {
            list.fail(
                "NATS JetStream",
                e.to_string(),
                "run nats-server with JetStream enabled (-js) and enough storage",
            );
            None
        }
        Err(_) => {
            list.fail(
                "NATS JetStream",
                "no answer from JetStream within 10 s",
                "run nats-server with JetStream enabled (-js)",
            );
            None
        }
    }
}

/// One line per stream and bucket that is nearly full or differs from the
/// configuration (with the fix), and one line with all the others.
pub async fn stream_usage(list: &mut Checklist, js: &jetstream::Context, topology: &Topology) {
    let usages = tokio::time::timeout(Duration::from_secs(10), crate::topology::usage::sample(js, topology))
        .await
        .unwrap_or_default();
    let drain = |key: &str| {
        format!(
            "find why it is not drained (are the relay and the responder running? their logs, consumer lag, dead letters), or raise {key}"
        )
    };
    let mut fine = Vec::new();
    for u in usages {
        let key = match u.stream.strip_prefix(&format!("{}_", topology.namespace())) {
            _ if u.stream == topology.files_bucket_config().name => "nats.files_max_bytes",
            Some("events") => "nats.events_max_bytes",
            Some("replies") => "nats.replies_max_bytes",
            Some("dead") => "nats.dead_max_bytes",
            _ => "nats.bucket_max_bytes",
        };
        if !u.differs.is_empty() {
            list.fail(
                format!("stream {}", u.stream),
                u.describe(),
                "start a service (it updates the stream to the configuration) and read its log, or run --check again: an error names what NATS cannot change and how to apply it",
            );
        } else if u.full() {
            list.fail(
                format!("stream {}", u.stream),
                format!("{} (at the limit, writes are refused: nothing is dropped, but work stops)", u.describe()),
                drain(key),
            );
        } else if u.nearly_full() {
            list.warn(
                format!("stream {}", u.stream),
                format!("{} (nearly full: at the limit writes are refused, and work stops)", u.describe()),
                drain(key),
            );
        } else {
            fine.push(u.describe());
        }
    }
    if !fine.is_empty() {
        list.pass("stream usage", fine.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixes_and_counts() {
        let mut l = Checklist::new("relay --check");
        l.pass("config", "1 channel");
        l.fail("FastGPT support", "HTTP 500 unAuthApiKey", "set channels[0].fastgpt_api_key");
        let text = l.render();
        assert!(text.contains("[ok] config: 1 channel"));
        assert!(text.contains("[FAIL] FastGPT support"));
        assert!(text.contains("fix: set channels[0].fastgpt_api_key"));
        assert!(text.ends_with("1 passed, 1 failed\n"));
        assert!(!l.passed());
    }
}
