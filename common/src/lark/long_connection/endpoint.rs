//! Where a long connection goes: `POST {lark_base_url}/callback/ws/endpoint`
//! with the App ID and Secret answers the WebSocket URL and the client
//! settings (`ClientConfig`). Also what a refused WebSocket handshake means.
//!
//! The URL carries secrets (`access_key`, `ticket`): it is held as
//! [`WsUrl`], whose Display and Debug show scheme, host and path only.
//!
//! Error classes follow the official SDKs: HTTP other than 200, code 1 and
//! code 1000040343 are Lark's side (retry); any other code is the app's
//! (wrong secret, not a self-built app, long connection not allowed): say
//! what to fix and retry slowly.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

pub const ENDPOINT_PATH: &str = "/callback/ws/endpoint";
/// Code of the endpoint: Lark is busy.
pub const CODE_SYSTEM_BUSY: i64 = 1;
/// Code of the endpoint: Lark's internal error.
pub const CODE_INTERNAL_ERROR: i64 = 1000040343;
/// `Handshake-Status` of a refused handshake: authentication failed.
pub const HANDSHAKE_AUTH_FAILED: i64 = 514;
/// `Handshake-Status`: the app is blocked.
pub const HANDSHAKE_FORBIDDEN: i64 = 403;
/// `Handshake-Autherrcode` with 514: the app has too many connections (50).
pub const AUTHERR_TOO_MANY_CONNECTIONS: i64 = 1000040350;
pub const HEADER_HANDSHAKE_STATUS: &str = "handshake-status";
pub const HEADER_HANDSHAKE_MSG: &str = "handshake-msg";
pub const HEADER_HANDSHAKE_AUTHERRCODE: &str = "handshake-autherrcode";

/// Lark's settings for the client, in seconds. Defaults are the SDKs'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ClientConfig {
    /// Reconnect attempts before giving up; -1: never give up. The bridge
    /// never gives up (a service that stops receiving is worse than one that
    /// keeps trying slowly), so this is read but not obeyed.
    #[serde(rename = "ReconnectCount", default = "defaults::count")]
    pub reconnect_count: i64,
    #[serde(rename = "ReconnectInterval", default = "defaults::interval")]
    pub reconnect_interval: u64,
    /// Upper bound of the random wait before the first reconnect.
    #[serde(rename = "ReconnectNonce", default = "defaults::nonce")]
    pub reconnect_nonce: u64,
    #[serde(rename = "PingInterval", default = "defaults::ping")]
    pub ping_interval: u64,
}

mod defaults {
    pub fn count() -> i64 {
        -1
    }
    pub fn interval() -> u64 {
        120
    }
    pub fn nonce() -> u64 {
        30
    }
    pub fn ping() -> u64 {
        120
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            reconnect_count: defaults::count(),
            reconnect_interval: defaults::interval(),
            reconnect_nonce: defaults::nonce(),
            ping_interval: defaults::ping(),
        }
    }
}

/// The longest interval taken from Lark's ClientConfig: values come from the
/// network, and a huge one would overflow the timers built on them.
const MAX_INTERVAL_SECS: u64 = 3600;

impl ClientConfig {
    /// The ping interval, 1 s to 1 h.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval.clamp(1, MAX_INTERVAL_SECS))
    }
    /// The reconnect interval, 1 s (never a tight loop) to 1 h.
    pub fn reconnect_interval(&self) -> Duration {
        Duration::from_secs(self.reconnect_interval.clamp(1, MAX_INTERVAL_SECS))
    }
    /// The jitter before the first reconnect, at most 1 h.
    pub fn reconnect_nonce(&self) -> Duration {
        Duration::from_secs(self.reconnect_nonce.min(MAX_INTERVAL_SECS))
    }
    /// Parses a pong's payload; `None` when it is not a ClientConfig.
    pub fn from_pong(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }
}

/// The WebSocket URL. Its query holds secrets: Display and Debug show
/// `scheme://host[:port]/path` only; [`WsUrl::expose`] gives the whole URL to
/// the one call that dials it.
#[derive(Clone)]
pub struct WsUrl(SecretString);

impl WsUrl {
    pub fn new(url: String) -> Self {
        Self(SecretString::from(url))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A query parameter that is not a secret (`device_id`, `service_id`).
    fn query(&self, key: &str) -> Option<String> {
        let url = Url::parse(self.expose()).ok()?;
        let value = url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
        value
    }
}

impl std::fmt::Display for WsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Url::parse(self.expose()) {
            Ok(u) => {
                write!(f, "{}://{}", u.scheme(), u.host_str().unwrap_or(""))?;
                if let Some(port) = u.port() {
                    write!(f, ":{port}")?;
                }
                write!(f, "{}", u.path())
            }
            Err(_) => f.write_str("<unparsable URL>"),
        }
    }
}

impl std::fmt::Debug for WsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WsUrl({self})")
    }
}

/// What the endpoint answered.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: WsUrl,
    /// `device_id` of the URL: names the connection in logs.
    pub device_id: String,
    /// `service_id` of the URL: goes into every ping.
    pub service_id: i32,
    pub config: ClientConfig,
}

/// Why no endpoint was given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    /// Lark is busy or unreachable: retry after the reconnect interval.
    #[error("Lark's long-connection endpoint is not available: {0}")]
    Transient(String),
    /// The app's settings are wrong: retrying will not help until they change.
    #[error("Lark refused the app's long connection (code {code}: {msg})")]
    App { code: i64, msg: String },
}

impl EndpointError {
    pub fn fix(&self) -> &'static str {
        match self {
            Self::Transient(_) => "none needed if it passes; else check that this host reaches lark_base_url",
            Self::App { .. } => {
                "check app_id and app_secret (Credentials & Basic Info), that the app is a self-built (custom) app, \
                 and lark_base_url (open.feishu.cn for Feishu, open.larksuite.com for Lark)"
            }
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Transient(_) => "endpoint_unavailable",
            Self::App { .. } => "endpoint_refused",
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: Option<AnswerData>,
}

#[derive(Deserialize)]
struct AnswerData {
    #[serde(rename = "URL")]
    url: String,
    #[serde(rename = "ClientConfig", default)]
    client_config: Option<ClientConfig>,
}

/// Asks Lark where to connect.
pub async fn fetch(
    http: &reqwest::Client,
    lark_base_url: &Url,
    app_id: &str,
    app_secret: &SecretString,
) -> Result<Endpoint, EndpointError> {
    let url = format!("{}{ENDPOINT_PATH}", lark_base_url.as_str().trim_end_matches('/'));
    let body = serde_json::json!({ "AppID": app_id, "AppSecret": app_secret.expose_secret() });
    let resp = http
        .post(&url)
        .header("locale", "zh")
        .json(&body)
        .send()
        .await
        .map_err(|e| EndpointError::Transient(format!("cannot reach {url}: {}", e.without_url())))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| EndpointError::Transient(e.without_url().to_string()))?;
    if status != reqwest::StatusCode::OK {
        return Err(EndpointError::Transient(format!("HTTP {status}")));
    }
    parse(&bytes)
}

/// Reads the endpoint's answer.
pub fn parse(body: &[u8]) -> Result<Endpoint, EndpointError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| EndpointError::Transient(format!("the endpoint's answer is not JSON: {e}")))?;
    match answer.code {
        0 => {}
        CODE_SYSTEM_BUSY | CODE_INTERNAL_ERROR => {
            return Err(EndpointError::Transient(format!("code {}: {}", answer.code, answer.msg)))
        }
        code => return Err(EndpointError::App { code, msg: answer.msg }),
    }
    let data = answer.data.ok_or_else(|| EndpointError::Transient("code 0 without data".into()))?;
    let url = WsUrl::new(data.url);
    let device_id = url.query("device_id").unwrap_or_default();
    let service_id = url
        .query("service_id")
        .and_then(|s| s.parse::<i32>().ok())
        .ok_or_else(|| EndpointError::Transient(format!("the URL {url} has no service_id")))?;
    Ok(Endpoint { url, device_id, service_id, config: data.client_config.unwrap_or_default() })
}

/// A WebSocket handshake Lark refused, from its `Handshake-*` headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Lark refused the connection: the app has too many long connections (Lark allows 50 per app; {msg})")]
    TooManyConnections { msg: String },
    #[error("Lark refused the connection: the app is blocked ({msg})")]
    AppBlocked { msg: String },
    #[error("Lark refused the connection: HTTP {http_status}, handshake status {status:?}, {msg}")]
    Other { http_status: u16, status: Option<i64>, autherrcode: Option<i64>, msg: String },
}

impl Refusal {
    /// Reads the refusal; `get` looks a header up by its lower-case name.
    pub fn from_headers<'a>(http_status: u16, get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse::<i64>().ok());
        let msg = get(HEADER_HANDSHAKE_MSG).unwrap_or_default().to_owned();
        match (num(HEADER_HANDSHAKE_STATUS), num(HEADER_HANDSHAKE_AUTHERRCODE)) {
            (Some(HANDSHAKE_AUTH_FAILED), Some(AUTHERR_TOO_MANY_CONNECTIONS)) => Self::TooManyConnections { msg },
            (Some(HANDSHAKE_FORBIDDEN), _) => Self::AppBlocked { msg },
            (status, autherrcode) => Self::Other { http_status, status, autherrcode, msg },
        }
    }

    pub fn fix(&self) -> &'static str {
        match self {
            Self::TooManyConnections { .. } => {
                "lower ingress.long_connections_per_channel or the ingress replicas (replicas x connections per \
                 channel must stay under 50 per app), and stop other clients of the same app (an SDK, another deployment)"
            }
            Self::AppBlocked { .. } => {
                "the app is disabled or blocked in the Lark tenant: ask the tenant admin (Admin console > Apps)"
            }
            Self::Other { .. } => {
                "check app_id and app_secret, and that the app is a self-built app with the persistent connection mode"
            }
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::TooManyConnections { .. } => "too_many_connections",
            Self::AppBlocked { .. } => "app_blocked",
            Self::Other { .. } => "handshake_refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "wss://msg-frontier.feishu.cn/ws/v2?fpid=493&aid=552564&device_id=7&access_key=AK_SECRET&service_id=33554678&ticket=TICKET_SECRET";

    #[test]
    fn the_url_is_shown_without_its_secrets() {
        let u = WsUrl::new(URL.into());
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("AK_SECRET") && !shown.contains("TICKET_SECRET"), "{shown}");
            assert!(shown.contains("wss://msg-frontier.feishu.cn/ws/v2"), "{shown}");
        }
        let with_port = WsUrl::new("ws://127.0.0.1:9/ws?ticket=T".into());
        assert_eq!(with_port.to_string(), "ws://127.0.0.1:9/ws");
    }

    #[test]
    fn parses_the_answer() {
        let body = serde_json::json!({
            "code": 0,
            "data": { "URL": URL, "ClientConfig": { "ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 90 } }
        });
        let e = parse(body.to_string().as_bytes()).expect("parsed");
        assert_eq!((e.device_id.as_str(), e.service_id), ("7", 33554678));
        assert_eq!(e.config.ping_interval(), Duration::from_secs(90));
        assert!(!format!("{e:?}").contains("TICKET_SECRET"));
    }

    #[test]
    fn error_classes() {
        let answer = |code: i64| serde_json::json!({ "code": code, "msg": "m" }).to_string();
        assert!(matches!(parse(answer(1).as_bytes()), Err(EndpointError::Transient(_))));
        assert!(matches!(parse(answer(1000040343).as_bytes()), Err(EndpointError::Transient(_))));
        assert!(matches!(parse(answer(10003).as_bytes()), Err(EndpointError::App { code: 10003, .. })));
        assert!(matches!(parse(b"<html>"), Err(EndpointError::Transient(_))));
        let no_service = serde_json::json!({ "code": 0, "data": { "URL": "wss://x/ws?ticket=t" } }).to_string();
        assert!(matches!(parse(no_service.as_bytes()), Err(EndpointError::Transient(_))));
    }

    #[test]
    fn refusals() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
        };
        let too_many = Refusal::from_headers(
            200,
            headers(&[("handshake-status", "514"), ("handshake-autherrcode", "1000040350"), ("handshake-msg", "m")]),
        );
        assert_eq!(too_many, Refusal::TooManyConnections { msg: "m".into() });
        assert!(too_many.fix().contains("long_connections_per_channel"));
        assert!(matches!(
            Refusal::from_headers(200, headers(&[("handshake-status", "403")])),
            Refusal::AppBlocked { .. }
        ));
        assert!(matches!(Refusal::from_headers(502, headers(&[])), Refusal::Other { http_status: 502, .. }));
    }

    #[test]
    fn client_config_defaults_and_floors() {
        let c: ClientConfig = serde_json::from_str("{}").expect("json");
        assert_eq!(c, ClientConfig::default());
        let zero = ClientConfig { reconnect_interval: 0, ping_interval: 0, ..Default::default() };
        assert_eq!(zero.reconnect_interval(), Duration::from_secs(1));
        assert_eq!(zero.ping_interval(), Duration::from_secs(1));
    }
}
