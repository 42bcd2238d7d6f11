//! Lark's message resources over HTTP: the images and files users send,
//! which a bot downloads with
//! `GET /open-apis/im/v1/messages/{message_id}/resources/{file_key}?type=image|file`.
//!
//! Rules and codes, from Lark's "get resource in message" page: the tenant
//! token, and one of the scopes `im:message:readonly` or `im:message`
//! (99991672 otherwise); `type` must be `image` for the images of image
//! messages and posts, `file` for files (234001 otherwise); a key that is not
//! in the message is 234003; a resource over 100 MB is 234037; stickers,
//! cards and merged forwards have none to download (234043). The body is the
//! bytes, with the resource's content type.
//!
//! A test (or the sandbox, `POST /_sandbox/resources/{message_id}/{key}`)
//! adds the resources of its messages, and can break a download's body:
//! cut halfway, longer than its `Content-Length`, or sent without one. Other
//! failures (5xx, rate limits, a lost response) go through
//! [`super::FakeLark::fail_next`] with [`super::Endpoint::Resource`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::api::Outcome;
use super::{Endpoint, FakeLark, Shared};

/// Lark's `type` of a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Image,
    File,
}

impl ResourceKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::File => "file",
        }
    }
}

/// How a body goes wrong, once per download (in the order given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// `Content-Length` of the whole, then the connection closes after half.
    CutHalfway,
    /// `Content-Length` of half the bytes, then all of them (what a client
    /// sees is what its HTTP stack makes of that: at most the announced half).
    LongerThanAnnounced,
    /// No `Content-Length` (chunked): only the size limit of the reader stops it.
    Unannounced,
}

/// What a download of one resource gets.
#[derive(Clone, Debug)]
enum Stored {
    Bytes {
        kind: ResourceKind,
        bytes: Bytes,
        content_type: String,
    },
    /// Lark refuses it for good (234037, 234043).
    Refused {
        code: i64,
        msg: &'static str,
    },
}

/// One download request, as the fake answered it.
#[derive(Clone, Debug)]
pub struct Download {
    pub message_id: String,
    pub key: String,
    pub type_param: Option<String>,
    pub http_status: u16,
    /// Lark's code (0 for bytes).
    pub code: i64,
    pub fault: Option<BodyFault>,
}

/// The resources the fake serves, and the downloads it answered.
#[derive(Default)]
pub struct Resources {
    stored: Mutex<HashMap<(String, String), Stored>>,
    faults: Mutex<HashMap<(String, String), VecDeque<BodyFault>>>,
    downloads: Mutex<Vec<Download>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn id(message_id: &str, key: &str) -> (String, String) {
    (message_id.to_owned(), key.to_owned())
}

impl Resources {
    /// An image of message `message_id` (an image message or a post's image).
    pub fn add_image(&self, message_id: &str, image_key: &str, bytes: impl Into<Bytes>) {
        self.add(message_id, image_key, ResourceKind::Image, bytes.into());
    }

    /// The file of a file message.
    pub fn add_file(&self, message_id: &str, file_key: &str, bytes: impl Into<Bytes>) {
        self.add(message_id, file_key, ResourceKind::File, bytes.into());
    }

    fn add(&self, message_id: &str, key: &str, kind: ResourceKind, bytes: Bytes) {
        // Lark serves images as their type and files as a stream of bytes.
        let content_type = match kind {
            ResourceKind::Image => infer_image_type(&bytes).to_owned(),
            ResourceKind::File => "application/octet-stream".to_owned(),
        };
        lock(&self.stored).insert(id(message_id, key), Stored::Bytes { kind, bytes, content_type });
    }

    /// Lark's 234037: the resource is over 100 MB.
    pub fn too_large(&self, message_id: &str, key: &str) {
        let refused = Stored::Refused { code: 234037, msg: "Downloaded file size exceeds limit." };
        lock(&self.stored).insert(id(message_id, key), refused);
    }

    /// Lark's 234043: a sticker, card or merged forward (nothing to download).
    pub fn not_downloadable(&self, message_id: &str, key: &str) {
        let refused = Stored::Refused { code: 234043, msg: "Unsupported message type." };
        lock(&self.stored).insert(id(message_id, key), refused);
    }

    /// Breaks the bodies of the next downloads of this resource, one fault each.
    pub fn fault_next(&self, message_id: &str, key: &str, faults: Vec<BodyFault>) {
        lock(&self.faults).entry(id(message_id, key)).or_default().extend(faults);
    }

    /// Every download asked for, in order (refused ones too).
    pub fn downloads(&self) -> Vec<Download> {
        lock(&self.downloads).clone()
    }

    fn record(&self, download: Download) {
        lock(&self.downloads).push(download);
    }
}

impl FakeLark {
    /// The resources of messages: see [`Resources`].
    pub fn resources(&self) -> &Resources {
        &self.shared.resources
    }
}

/// The content type Lark gives an image: good enough from its first bytes.
fn infer_image_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [b'G', b'I', b'F', ..] => "image/gif",
        _ => "application/octet-stream",
    }
}

/// The largest body `POST /_sandbox/resources/...` takes: Lark's 100 MB.
pub const SANDBOX_UPLOAD_LIMIT: usize = 100 * 1024 * 1024;

/// The routes of resources, merged into the fake's API router.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/open-apis/im/v1/messages/{message_id}/resources/{file_key}", get(download))
        // Up to Lark's own limit (axum's default would stop a body at 2 MB).
        .route(
            "/_sandbox/resources/{message_id}/{file_key}",
            post(sandbox_add).layer(axum::extract::DefaultBodyLimit::max(SANDBOX_UPLOAD_LIMIT)),
        )
}

#[derive(Deserialize)]
struct TypeQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((message_id, key)): Path<(String, String)>,
    Query(query): Query<TypeQuery>,
    headers: HeaderMap,
) -> Response {
    let record = |http_status: u16, code: i64, fault: Option<BodyFault>| {
        shared.resources.record(Download {
            message_id: message_id.clone(),
            key: key.clone(),
            type_param: query.kind.clone(),
            http_status,
            code,
            fault,
        })
    };
    let call = match shared.begin(Endpoint::Resource, &headers).await {
        Ok(call) => call,
        Err(refused) => {
            let response = shared.refuse(Endpoint::Resource, refused);
            record(response.status().as_u16(), -1, None);
            return response;
        }
    };
    let stored = lock(&shared.resources.stored).get(&id(&message_id, &key)).cloned();
    let refusal = |code: i64, msg: &str| (Outcome::error(400, code, msg), code);
    let (kind, bytes, content_type) = match (stored, query.kind.as_deref()) {
        (_, None) => {
            let (outcome, code) = refusal(234001, "Invalid request param.");
            record(400, code, None);
            return shared.finish(Endpoint::Resource, &call, outcome, None, false);
        }
        (None, _) => {
            let (outcome, code) = refusal(234003, "File not in msg.");
            record(400, code, None);
            return shared.finish(Endpoint::Resource, &call, outcome, None, false);
        }
        (Some(Stored::Refused { code, msg }), _) => {
            record(400, code, None);
            return shared.finish(Endpoint::Resource, &call, Outcome::error(400, code, msg), None, false);
        }
        (Some(Stored::Bytes { kind, bytes, content_type }), Some(_)) => (kind, bytes, content_type),
    };
    if query.kind.as_deref() != Some(kind.as_str()) {
        let (outcome, code) = refusal(234001, "Invalid request param.");
        record(400, code, None);
        return shared.finish(Endpoint::Resource, &call, outcome, None, false);
    }
    // Recorded like the other endpoints' attempts; a scripted lost response
    // comes back as a 502 here.
    let recorded = shared.finish(Endpoint::Resource, &call, Outcome::ok(json!({})), None, false);
    if recorded.status() != StatusCode::OK {
        record(recorded.status().as_u16(), 0, None);
        return recorded;
    }
    let fault = lock(&shared.resources.faults).get_mut(&id(&message_id, &key)).and_then(VecDeque::pop_front);
    record(200, 0, fault);
    let disposition = format!("attachment; filename=\"{key}\"");
    let base = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_DISPOSITION, disposition);
    // A broken body leaves its connection unusable: no client may reuse it.
    let base = if fault.is_some() { base.header(header::CONNECTION, "close") } else { base };
    let half = bytes.slice(..bytes.len() / 2);
    let built = match fault {
        None => base.header(header::CONTENT_LENGTH, bytes.len()).body(Body::from(bytes)),
        Some(BodyFault::CutHalfway) => {
            // The half is flushed before the connection breaks (a body error
            // at once would lose the headers too).
            let first = futures::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
            let cut = futures::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut halfway"))
            });
            base.header(header::CONTENT_LENGTH, bytes.len()).body(Body::from_stream(first.chain(cut)))
        }
        Some(BodyFault::LongerThanAnnounced) => {
            let whole: Vec<Result<Bytes, std::io::Error>> = vec![Ok(bytes)];
            base.header(header::CONTENT_LENGTH, half.len()).body(Body::from_stream(futures::stream::iter(whole)))
        }
        Some(BodyFault::Unannounced) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                bytes.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            base.body(Body::from_stream(futures::stream::iter(chunks)))
        }
    };
    built.unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

/// `POST /_sandbox/resources/{message_id}/{key}?type=image|file` with the
/// bytes as the body: what [`Resources::add_image`] and
/// [`Resources::add_file`] do, for a process that sends events itself.
async fn sandbox_add(
    State(shared): State<Arc<Shared>>,
    Path((message_id, key)): Path<(String, String)>,
    Query(query): Query<TypeQuery>,
    body: Bytes,
) -> StatusCode {
    match query.kind.as_deref() {
        Some("image") => shared.resources.add_image(&message_id, &key, body),
        Some("file") => shared.resources.add_file(&message_id, &key, body),
        _ => return StatusCode::BAD_REQUEST,
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_lark::{Failure, FakeApp};

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n0123456789abcdef";

    async fn token(fake: &FakeLark, client: &reqwest::Client) -> String {
        crate::fake_lark::tenant_token(client, &fake.base_url(), "cli_a", "s").await
    }

    async fn get(fake: &FakeLark, client: &reqwest::Client, token: &str, path: &str) -> reqwest::Response {
        let url = format!("{}/open-apis/im/v1/messages/{path}", fake.base_url());
        client.get(url).bearer_auth(token).send().await.expect("answer")
    }

    #[tokio::test]
    async fn serves_resources_with_larks_rules_and_codes() {
        let fake = FakeLark::start(vec![FakeApp::new("cli_a", "s", "ou_bot")]).await;
        let client = reqwest::Client::new();
        let token = token(&fake, &client).await;
        fake.resources().add_image("om_1", "img_1", PNG);
        fake.resources().too_large("om_2", "file_big");
        fake.resources().not_downloadable("om_3", "sticker_1");

        let ok = get(&fake, &client, &token, "om_1/resources/img_1?type=image").await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], "image/png");
        assert_eq!(ok.bytes().await.expect("body").as_ref(), PNG);
        let code = |v: serde_json::Value| v["code"].as_i64();
        let wrong_type = get(&fake, &client, &token, "om_1/resources/img_1?type=file").await;
        assert_eq!(code(wrong_type.json().await.expect("JSON")), Some(234001));
        let not_in_message = get(&fake, &client, &token, "om_9/resources/img_1?type=image").await;
        assert_eq!(code(not_in_message.json().await.expect("JSON")), Some(234003));
        let big = get(&fake, &client, &token, "om_2/resources/file_big?type=file").await;
        assert_eq!(code(big.json().await.expect("JSON")), Some(234037));
        let sticker = get(&fake, &client, &token, "om_3/resources/sticker_1?type=file").await;
        assert_eq!(code(sticker.json().await.expect("JSON")), Some(234043));

        fake.fail_next(Endpoint::Resource, vec![Failure::Http500]);
        assert_eq!(get(&fake, &client, &token, "om_1/resources/img_1?type=image").await.status(), 500);
        fake.remove_scope("cli_a", "im:message:readonly");
        let no_scope = get(&fake, &client, &token, "om_1/resources/img_1?type=image").await;
        assert_eq!(code(no_scope.json().await.expect("JSON")), Some(99991672));
        fake.grant_scope("cli_a", "im:message");
        assert_eq!(get(&fake, &client, &token, "om_1/resources/img_1?type=image").await.status(), 200, "either scope");
        let unauthenticated = client
            .get(format!("{}/open-apis/im/v1/messages/om_1/resources/img_1?type=image", fake.base_url()))
            .send()
            .await
            .expect("answer");
        assert_eq!(code(unauthenticated.json().await.expect("JSON")), Some(99991661));
        assert_eq!(fake.resources().downloads().len(), 9);
    }

    #[tokio::test]
    async fn broken_bodies_look_broken_to_a_client() {
        let fake = FakeLark::start(vec![FakeApp::new("cli_a", "s", "ou_bot")]).await;
        let client = reqwest::Client::new();
        let token = token(&fake, &client).await;
        let file = vec![7u8; 200_000];
        fake.resources().add_file("om_1", "file_1", file.clone());
        fake.resources().fault_next(
            "om_1",
            "file_1",
            vec![BodyFault::CutHalfway, BodyFault::LongerThanAnnounced, BodyFault::Unannounced],
        );
        let path = "om_1/resources/file_1?type=file";
        let cut = get(&fake, &client, &token, path).await;
        assert_eq!(cut.content_length(), Some(200_000));
        assert!(cut.bytes().await.is_err(), "the body breaks off");
        let longer = get(&fake, &client, &token, path).await;
        assert_eq!(longer.content_length(), Some(100_000));
        assert_eq!(longer.bytes().await.expect("body").len(), 100_000, "HTTP framing stops at the announced length");
        let unannounced = get(&fake, &client, &token, path).await;
        assert_eq!(unannounced.content_length(), None);
        assert_eq!(unannounced.bytes().await.expect("body").len(), 200_000);
        let whole = get(&fake, &client, &token, path).await;
        assert_eq!(whole.bytes().await.expect("body").as_ref(), file.as_slice());
    }
}
