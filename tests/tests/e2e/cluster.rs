//! NATS servers of a test's own, so they can be killed without disturbing
//! anything else: a 3-node JetStream cluster on loopback (any one node may
//! die or restart), each node with its own store
//! directory, kept across restarts as a real node's disk would be. The
//! monitoring port of each node tells who leads (`/jsz`); stream info tells
//! whether a restarted node caught up. (nats-server 2.9.10's `/healthz` is of
//! no use there: it reports a consumer that never saw a message as "not
//! current" for ever after a restart.)

use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use lark_bridge_tests::eventually::within_every;
use lark_bridge_tests::ports::free_port;
use serde_json::Value;
use tokio::process::{Child, Command};

/// How often the cluster is asked about its leaders and replicas while a
/// test waits (each check is several requests to the nodes).
const POLL: Duration = Duration::from_millis(100);

/// Debian's nats-server (deploy/test installs it).
fn nats_server_binary() -> &'static str {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server")
}

/// One nats-server process with JetStream.
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    http_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn new(name: String) -> Self {
        Self {
            name,
            port: free_port(),
            cluster_port: free_port(),
            http_port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (with the same name, ports and store as before) and
    /// waits until it accepts clients; says why when it does not.
    async fn spawn(&mut self, routes: &[String]) -> Result<(), String> {
        let mut cmd = Command::new(nats_server_binary());
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.http_port.to_string()])
            .args(["-n", &self.name, "-js", "-sd"])
            .arg(self.dir.path())
            .arg("-l")
            .arg(self.log_file());
        if !routes.is_empty() {
            cmd.args(["--cluster_name", "lark-bridge-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", self.cluster_port)])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server runs (Debian package nats-server; deploy/test installs it)");
        self.child = Some(child);
        // The client port opens first, the cluster port after it: a port
        // taken by another process shows as a node that exits meanwhile.
        let ports = [Some(self.port), Some(self.http_port), (!routes.is_empty()).then_some(self.cluster_port)];
        for _ in 0..400 {
            let mut listening = true;
            for port in ports.into_iter().flatten() {
                listening &= tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok();
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "nats-server {} exited at start ({status}); its log ends:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if listening {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill().await;
        Err(format!("nats-server {} did not open its ports within 20 s; its log ends:\n{}", self.name, self.log_tail()))
    }

    /// `kill -9`.
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn log_file(&self) -> std::path::PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The last lines of the server's log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Three nats-server processes routed to each other, JetStream on each.
pub struct NatsCluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
}

impl NatsCluster {
    /// Starts three nodes and waits until they elected a JetStream meta leader.
    /// A node that cannot start (another process took one of its ports
    /// between the pick and the bind) gets the whole cluster started again on
    /// other ports, up to three times.
    pub async fn start() -> Self {
        let mut attempt = 1;
        loop {
            let tag = lark_bridge_tests::lark_events::random_hex(4);
            let nodes = (0..3).map(|i| Node::new(format!("n{i}-{tag}"))).collect();
            let mut c = Self { nodes, http: reqwest::Client::new() };
            match c.spawn_all().await {
                Ok(()) => {
                    c.meta_leader().await;
                    return c;
                }
                Err(e) if attempt < 3 => eprintln!("{e}\nstarting the cluster again on other ports"),
                Err(e) => panic!("{e}"),
            }
            c.kill_all().await;
            attempt += 1;
        }
    }

    async fn spawn_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let routes = self.routes_of(i);
            self.nodes[i].spawn(&routes).await?;
        }
        Ok(())
    }

    fn routes_of(&self, i: usize) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect()
    }

    /// Every node's client URL, comma-separated: what `nats.url` gets.
    pub fn url(&self) -> String {
        self.nodes.iter().map(Node::url).collect::<Vec<_>>().join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// `kill -9` of node `i`.
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// Restarts node `i` with its store and waits until it rejoined the
    /// cluster (knows the meta leader).
    pub async fn restart(&mut self, i: usize) {
        let routes = self.routes_of(i);
        self.nodes[i].spawn(&routes).await.unwrap_or_else(|e| panic!("{e}"));
        self.meta_leader().await;
    }

    /// `kill -9` of every node: NATS is gone.
    pub async fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill().await;
        }
    }

    /// Starts every node that is down and waits until all caught up.
    pub async fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].running() {
                let routes = self.routes_of(i);
                self.nodes[i].spawn(&routes).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
        self.meta_leader().await;
    }

    async fn get_json(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}{path}", self.nodes[i].http_port);
        let resp = self.http.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    }

    /// The index of the JetStream meta leader, once every running node names
    /// the same one.
    pub async fn meta_leader(&self) -> usize {
        let leader = within_every(Duration::from_secs(30), POLL, || async {
            let mut named = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                if n.running() {
                    let leader = self.get_json(i, "/jsz").await.and_then(|(_, v)| {
                        v["meta_cluster"]["leader"].as_str().filter(|l| !l.is_empty()).map(str::to_owned)
                    });
                    named.push(leader);
                }
            }
            let first = named.first()?.as_deref()?;
            named.iter().all(|l| l.as_deref() == Some(first)).then(|| self.index_of(first)).flatten()
        })
        .await;
        leader.unwrap_or_else(|| panic!("the cluster elected no JetStream meta leader within 30 s"))
    }

    /// The index of the node that leads `stream` (from stream info).
    pub async fn stream_leader(&self, js: &jetstream::Context, stream: &str) -> usize {
        let leader = within_every(Duration::from_secs(30), POLL, || async {
            let (cluster, _) = stream_cluster(js, stream).await?;
            cluster.leader.as_deref().and_then(|l| self.index_of(l))
        })
        .await;
        leader.unwrap_or_else(|| panic!("stream {stream} has no leader after 30 s"))
    }

    /// Waits until every replica of each stream is current (a restarted node
    /// caught up), so that losing another node leaves a quorum that has it all.
    pub async fn wait_current(&self, js: &jetstream::Context, streams: &[String]) {
        for stream in streams {
            let caught_up = within_every(Duration::from_secs(60), POLL, || async {
                let (cluster, replicas) = stream_cluster(js, stream).await?;
                let followers_current = cluster.replicas.iter().filter(|r| r.current && !r.offline).count();
                (cluster.leader.is_some() && followers_current + 1 >= replicas).then_some(())
            })
            .await;
            if caught_up.is_none() {
                let last = stream_cluster(js, stream).await;
                let logs: Vec<String> = self.nodes.iter().map(|n| format!("{}:\n{}", n.name, n.log_tail())).collect();
                panic!("stream {stream} did not catch up: {last:?}\n{}", logs.join("\n"));
            }
        }
    }

    /// How many replicas `stream` has, and how many of them are current.
    pub async fn stream_replicas(&self, js: &jetstream::Context, stream: &str) -> (usize, usize) {
        let (cluster, replicas) = stream_cluster(js, stream).await.expect("the stream and its info");
        let peers = cluster.replicas.iter().filter(|r| r.current).count();
        (replicas, peers + 1)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// A stream's cluster (leader, replicas) and how many replicas it should have.
async fn stream_cluster(js: &jetstream::Context, stream: &str) -> Option<(jetstream::stream::ClusterInfo, usize)> {
    let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
    Some((info.cluster.unwrap_or_default(), info.config.num_replicas))
}
