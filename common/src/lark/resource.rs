//! Downloading the image or file of a message:
//! `GET /open-apis/im/v1/messages/{message_id}/resources/{key}?type=image|file`
//! with the tenant token (scope `im:message:readonly` or `im:message`).
//!
//! The body is read chunk by chunk against a byte limit ([`BoundedBody`]):
//! an announced `Content-Length` over the limit is refused before a byte is
//! read, a body that grows past the limit or past what it announced is cut
//! off at once, and one that ends short of its announcement is an error (a
//! transfer cut halfway), so nothing larger than the limit is ever held and
//! nothing partial is ever used.
//!
//! Lark answers errors as JSON with a code, like every API: 234037 (the
//! resource is over Lark's 100 MB), 234043 (stickers, cards and merged
//! forwards cannot be downloaded), the token and scope codes of
//! [`super::errors`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::CONTENT_TYPE;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::api::{LarkClient, LarkError};
use super::calls::{CallOutcome, LarkApi};
use super::errors::{retry_after, ErrorClass};
use super::ids::path_segment as segment;

/// Lark: the resource is larger than it lets anyone download (100 MB).
pub const TOO_LARGE: i64 = 234037;
/// Lark: this kind of message has no downloadable resource (stickers, cards,
/// merged forwards).
pub const NOT_DOWNLOADABLE: i64 = 234043;

/// A download may take this long: a 100 MB file over a slow link, well under
/// the worker's patience (it keeps the message's ack timer running).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of an error body is read.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// Lark's `type` parameter: images of image messages and posts are `image`,
/// everything else (files, and a video or audio) is `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Image,
    File,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::File => "file",
        }
    }
}

/// A downloaded resource.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub bytes: Bytes,
    /// What Lark said it is: a hint only (the bytes decide).
    pub content_type: Option<String>,
}

/// A body that does not fit what was allowed or announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("larger than the {announced} bytes its Content-Length announced")]
    LongerThanAnnounced { announced: u64 },
    #[error("cut off after {got} of the {announced} bytes announced")]
    Truncated { got: u64, announced: u64 },
}

/// Why a resource could not be downloaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Lark(#[from] LarkError),
    #[error("the download is {0}")]
    Size(#[from] SizeError),
}

/// What a failed download means for the user's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadFailure {
    /// Over our limit, or over Lark's (234037).
    TooLarge,
    /// Lark serves no resource for this kind of message (234043).
    NotDownloadable,
    /// Worth trying again: Lark or the network failed, or the transfer broke.
    Transient { retry_after: Option<Duration> },
    /// Will not work by retrying; `fix` tells the operator what to change.
    Refused { fix: &'static str },
}

impl DownloadError {
    pub fn failure(&self) -> DownloadFailure {
        match self {
            Self::Size(SizeError::TooLarge { .. }) => DownloadFailure::TooLarge,
            // A broken transfer: the next attempt may be whole.
            Self::Size(_) => DownloadFailure::Transient { retry_after: None },
            Self::Lark(LarkError::Api { code: Some(TOO_LARGE), .. }) => DownloadFailure::TooLarge,
            Self::Lark(LarkError::Api { code: Some(NOT_DOWNLOADABLE), .. }) => DownloadFailure::NotDownloadable,
            Self::Lark(LarkError::Api { code: Some(c), .. }) if super::errors::MISSING_SCOPE.contains(c) => {
                DownloadFailure::Refused {
                    fix: "the bot may not read the images and files of messages: grant the scope im:message:readonly \
                      (or im:message) under Permissions & Scopes in the Lark console and publish a new version",
                }
            }
            Self::Lark(e) => match e.class() {
                ErrorClass::Transient { retry_after } => DownloadFailure::Transient { retry_after },
                // Already retried once with a new token inside the call.
                ErrorClass::TokenInvalid => DownloadFailure::Transient { retry_after: None },
                ErrorClass::Permanent { fix } => DownloadFailure::Refused { fix },
            },
        }
    }
}

/// Accumulates a body within a limit and its announced length.
#[derive(Debug)]
pub struct BoundedBody {
    limit: u64,
    announced: Option<u64>,
    buf: BytesMut,
}

impl BoundedBody {
    /// Refuses at once a body announced larger than `limit`.
    pub fn new(limit: u64, announced: Option<u64>) -> Result<Self, SizeError> {
        if announced.is_some_and(|a| a > limit) {
            return Err(SizeError::TooLarge { limit });
        }
        let capacity = announced.unwrap_or(0).min(limit).min(1024 * 1024);
        Ok(Self { limit, announced, buf: BytesMut::with_capacity(capacity as usize) })
    }

    /// Adds a chunk, unless it takes the body past its announcement or the
    /// limit: then nothing more is kept.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), SizeError> {
        let total = self.buf.len() as u64 + chunk.len() as u64;
        if let Some(announced) = self.announced.filter(|a| total > *a) {
            return Err(SizeError::LongerThanAnnounced { announced });
        }
        if total > self.limit {
            return Err(SizeError::TooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole body, if it is as long as it announced.
    pub fn finish(self) -> Result<Bytes, SizeError> {
        let got = self.buf.len() as u64;
        match self.announced {
            Some(announced) if got < announced => Err(SizeError::Truncated { got, announced }),
            _ => Ok(self.buf.freeze()),
        }
    }
}

/// Lark's error envelope.
#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    msg: String,
}

impl LarkClient {
    /// Downloads the resource `key` of `message_id`, at most `limit` bytes.
    /// On an invalid token, fetches a new one and tries once more.
    pub async fn download_resource(
        &self,
        message_id: &str,
        key: &str,
        kind: ResourceType,
        limit: u64,
    ) -> Result<Downloaded, DownloadError> {
        let path = format!(
            "im/v1/messages/{}/resources/{}?type={}",
            segment("message_id", message_id).map_err(LarkError::from)?,
            segment("resource key", key).map_err(LarkError::from)?,
            kind.as_str()
        );
        let token = self.tenant_token().await?;
        match self.fetch_resource(&path, &token, limit).await {
            Err(DownloadError::Lark(e)) if e.class() == ErrorClass::TokenInvalid => {
                tracing::info!(channel = %self.channel().id, code = %e.code_label(), "Lark says the token is invalid; fetching a new one");
                self.invalidate(&token).await;
                let token = self.tenant_token().await?;
                self.fetch_resource(&path, &token, limit).await
            }
            other => other,
        }
    }

    async fn fetch_resource(&self, path: &str, token: &SecretString, limit: u64) -> Result<Downloaded, DownloadError> {
        let mut req = self.http.get(self.channel().lark_url(path)).timeout(DOWNLOAD_TIMEOUT);
        for (name, value) in crate::telemetry::http_headers() {
            req = req.header(name, value);
        }
        let sent = req.bearer_auth(token.expose_secret()).send().await;
        let outcome = match &sent {
            Ok(r) => CallOutcome::of(r.status().as_u16(), None),
            Err(_) => CallOutcome::Network,
        };
        self.count(LarkApi::MessageResource, outcome);
        let mut resp = sent.map_err(network)?;
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let is_json = content_type.as_deref().is_some_and(|t| t.starts_with("application/json"));
        if !status.is_success() {
            let wait = retry_after(resp.headers());
            let body = read_bounded(&mut resp, ERROR_BODY_LIMIT).await.unwrap_or_default();
            let env: Option<ErrorEnvelope> = serde_json::from_slice(&body).ok();
            let (code, msg) = match env {
                Some(env) => (env.code, env.msg),
                None => (None, format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]))),
            };
            return Err(LarkError::Api { http_status: status.as_u16(), code, msg, retry_after: wait }.into());
        }
        let bytes = read_bounded(&mut resp, limit).await?;
        // A 200 with Lark's JSON error (never seen, but the API's convention).
        if is_json {
            if let Ok(ErrorEnvelope { code: Some(code), msg }) = serde_json::from_slice::<ErrorEnvelope>(&bytes) {
                if code != 0 {
                    let e = LarkError::Api { http_status: status.as_u16(), code: Some(code), msg, retry_after: None };
                    return Err(e.into());
                }
            }
        }
        Ok(Downloaded { bytes, content_type })
    }
}

/// Reads a response's body within `limit` bytes (see [`BoundedBody`]).
async fn read_bounded(resp: &mut reqwest::Response, limit: u64) -> Result<Bytes, DownloadError> {
    let mut body = BoundedBody::new(limit, resp.content_length())?;
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        body.push(&chunk)?;
    }
    Ok(body.finish()?)
}

fn network(e: reqwest::Error) -> DownloadError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the body broke off"
    } else {
        "request failed"
    };
    DownloadError::Lark(LarkError::Network(format!("{kind}: {}", e.without_url())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(limit: u64, announced: Option<u64>, chunks: &[&[u8]]) -> Result<Bytes, SizeError> {
        let mut body = BoundedBody::new(limit, announced)?;
        for c in chunks {
            body.push(c)?;
        }
        body.finish()
    }

    #[test]
    fn a_body_within_its_limit_and_announcement_is_whole() {
        assert_eq!(feed(10, Some(6), &[b"abc", b"def"]), Ok(Bytes::from_static(b"abcdef")));
        assert_eq!(feed(10, None, &[b"abc", b"", b"defg"]), Ok(Bytes::from_static(b"abcdefg")));
        assert_eq!(feed(6, Some(6), &[b"abcdef"]), Ok(Bytes::from_static(b"abcdef")), "exactly the limit");
        assert_eq!(feed(6, Some(0), &[]), Ok(Bytes::new()));
    }

    #[test]
    fn an_announcement_over_the_limit_is_refused_before_reading() {
        assert_eq!(BoundedBody::new(10, Some(11)).err(), Some(SizeError::TooLarge { limit: 10 }));
    }

    #[test]
    fn a_body_growing_past_the_limit_is_cut_off() {
        let mut body = BoundedBody::new(10, None).expect("nothing announced");
        body.push(b"0123456789").expect("fits");
        assert_eq!(body.push(b"x"), Err(SizeError::TooLarge { limit: 10 }));
        assert_eq!(body.buf.len(), 10, "the chunk past the limit is not kept");
    }

    #[test]
    fn a_body_larger_than_announced_is_cut_off() {
        assert_eq!(feed(100, Some(4), &[b"abc", b"de"]), Err(SizeError::LongerThanAnnounced { announced: 4 }));
        assert_eq!(feed(100, Some(0), &[b"a"]), Err(SizeError::LongerThanAnnounced { announced: 0 }));
    }

    #[test]
    fn a_body_cut_halfway_is_an_error_worth_retrying() {
        let e = feed(100, Some(10), &[b"abcde"]).expect_err("short");
        assert_eq!(e, SizeError::Truncated { got: 5, announced: 10 });
        assert_eq!(DownloadError::Size(e).failure(), DownloadFailure::Transient { retry_after: None });
    }

    #[test]
    fn larks_codes_mean_what_the_user_is_told() {
        let api = |status: u16, code: i64| {
            DownloadError::Lark(LarkError::Api {
                http_status: status,
                code: Some(code),
                msg: String::new(),
                retry_after: None,
            })
        };
        assert_eq!(api(400, TOO_LARGE).failure(), DownloadFailure::TooLarge);
        assert_eq!(DownloadError::Size(SizeError::TooLarge { limit: 1 }).failure(), DownloadFailure::TooLarge);
        assert_eq!(api(400, NOT_DOWNLOADABLE).failure(), DownloadFailure::NotDownloadable);
        let DownloadFailure::Refused { fix } = api(400, 99991672).failure() else { panic!("a missing scope") };
        assert!(fix.contains("im:message:readonly"), "{fix}");
        assert!(matches!(api(500, 1).failure(), DownloadFailure::Transient { .. }));
        assert!(matches!(api(429, 99991400).failure(), DownloadFailure::Transient { .. }));
        let network = DownloadError::Lark(LarkError::Network("reset".into()));
        assert!(matches!(network.failure(), DownloadFailure::Transient { .. }));
        assert!(matches!(api(400, 234001).failure(), DownloadFailure::Refused { .. }));
    }
}
