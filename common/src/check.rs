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
    pub detail: String,
    pub fix: Option<String>,
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
        self.items.push(Item { name: name.into(), ok: true, detail: detail.into(), fix: None });
    }

    pub fn fail(&mut self, name: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.items.push(Item { name: name.into(), ok: false, detail: problem.into(), fix: Some(fix.into()) });
    }

    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }

    /// The checklist as a person reads it.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for i in &self.items {
            let _ = writeln!(out, "  [{}] {}: {}", if i.ok { "ok" } else { "FAIL" }, i.name, i.detail);
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
    let url = &settings.nats.url;
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
    let client = match tokio::time::timeout(Duration::from_secs(5), opts.connect(url.as_str())).await {
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
        Ok(Ok(())) => {
            list.pass(
                "NATS",
                format!(
                    "{url}: JetStream streams {}, {}, {} ready",
                    topology.events_stream(),
                    topology.replies_stream(),
                    topology.dead_stream()
                ),
            );
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
