//! `GET` and `HEAD /files/{object}/{name}?exp=...&sig=...`: the files users
//! sent, served to FastGPT through the links the relay signs
//! (`common::file_link`), from the files bucket (`{ns}_files`).
//!
//! The route is on the public port because FastGPT must reach it (it refuses
//! loopback addresses, and cannot fetch from Lark). So:
//!
//! | answer | when |
//! |---|---|
//! | 200 / 206 | a valid link to a stored object; one byte range when asked |
//! | 416 | a valid link, a range past the end |
//! | 404 | anything else, all alike: no such route (no listing), not an object name the relay makes, a bad or missing signature, another object's signature, an expired link, a name that is not the stored one, an object gone |
//! | 503 | a valid link, but NATS did not answer: FastGPT may try again |
//!
//! The signature is checked (in constant time) before the bucket is looked
//! at, so an unsigned request costs no NATS call. The answer is a download
//! that no browser runs: `Content-Disposition: attachment` with a safe file
//! name, `X-Content-Type-Options: nosniff` and a sandboxing
//! `Content-Security-Policy` (an HTML file a user sent stays inert on the
//! bridge's origin), and no caching.
//!
//! A download holds a few chunks of memory, however slowly the client reads
//! (see `Chunks` below): a thousand stalled downloads must not cost the ingress
//! a thousand files.

use std::sync::Arc;

use async_nats::jetstream::{self, object_store, stream};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::config::{FilesSetup, Settings};
use common::file_link::{now_secs, LinkSigner, META_NAME, META_TYPE};
use common::topology::Topology;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::OnceCell;

/// What the route needs: the signer (with `ingress.files_signing_key`) and the bucket.
pub struct Files {
    signer: LinkSigner,
    js: jetstream::Context,
    topology: Topology,
    store: OnceCell<object_store::ObjectStore>,
}

impl Files {
    pub fn new(signer: LinkSigner, js: jetstream::Context, topology: Topology) -> Self {
        Self { signer, js, topology, store: OnceCell::new() }
    }

    /// The bucket, opened on first use (the relay creates it).
    async fn store(&self) -> Result<&object_store::ObjectStore, common::topology::TopologyError> {
        self.store.get_or_try_init(|| self.topology.open_files(&self.js)).await
    }
}

/// The route when the ingress holds `ingress.files_signing_key` (all it
/// needs to check a link; `ingress.public_url` is for the relay, which makes
/// the links); without the key there is no route at all (404, as for any
/// unknown path).
pub fn serve_if_enabled(settings: &Settings, js: &jetstream::Context, topology: &Topology) -> Router {
    match &settings.ingress.files_signing_key {
        Some(key) => {
            if let FilesSetup::Disabled { missing } = settings.files() {
                tracing::warn!(%missing, "the ingress serves files, but the relay cannot link to them until {missing} is set");
            }
            let signer = LinkSigner::new(key.clone(), topology.files_max_age());
            router(Arc::new(Files::new(signer, js.clone(), topology.clone())))
        }
        // With `public_url` set the operator likely meant files on (the relay
        // then links to them): say loudly which key is missing, and how.
        None if settings.ingress.public_url.is_some() => {
            let fix = settings.files_fix();
            tracing::warn!(
                missing = "ingress.files_signing_key",
                "files are off although ingress.public_url is set: a file a user sends gets a notice, and there \
                 is no /files/ route; to turn them on, {fix}"
            );
            Router::new()
        }
        None => {
            let fix = settings.files_fix();
            tracing::info!("files are off: no /files/ route; to turn them on, {fix}");
            Router::new()
        }
    }
}

pub fn router(files: Arc<Files>) -> Router {
    // `get` answers HEAD too (without a body); the handler skips the read then.
    Router::new().route("/files/{object}/{name}", get(serve)).with_state(files)
}

fn count(outcome: &'static str) {
    metrics::counter!(common::metric_names::INGRESS_FILES_TOTAL, "outcome" => outcome).increment(1);
}

/// The one answer to every refused link.
fn not_found(why: &'static str) -> Response {
    count(why);
    tracing::debug!(reason = why, "file link refused");
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn unavailable(error: &dyn std::fmt::Display) -> Response {
    count("unavailable");
    tracing::warn!(error = %error, "cannot read the files bucket");
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], "unavailable").into_response()
}

async fn serve(
    State(files): State<Arc<Files>>,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((object, name))) = path else { return not_found("bad_path") };
    let (mut exp, mut sig) = (None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "exp" => exp = Some(v.into_owned()),
            "sig" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    if let Err(refusal) = files.signer.verify(&object, exp.as_deref(), sig.as_deref(), now_secs()) {
        return not_found(refusal.label());
    }
    let store = match files.store().await {
        Ok(store) => store,
        Err(e) => return unavailable(&e),
    };
    let info = match store.info(&object).await {
        Ok(info) if !info.deleted => info,
        Ok(_) => return not_found("gone"),
        Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => return not_found("gone"),
        Err(e) => return unavailable(&e),
    };
    if info.metadata.get(META_NAME) != Some(&name) {
        return not_found("other_name");
    }
    // The relay stores files, never links to other objects.
    if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
        return not_found("gone");
    }
    let size = info.size as u64;
    let mut answer = Response::builder()
        .header(header::CONTENT_TYPE, content_type(info.metadata.get(META_TYPE)))
        .header(header::CONTENT_DISPOSITION, content_disposition(&name))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox")
        .header(header::CACHE_CONTROL, "private, no-store")
        .header(header::REFERRER_POLICY, "no-referrer");
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match byte_range(range, size) {
        Ranged::Whole => (StatusCode::OK, 0, size),
        Ranged::Part { start, len } => {
            answer = answer.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", start + len - 1));
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        Ranged::Unsatisfiable => {
            count("unsatisfiable_range");
            return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{size}"))])
                .into_response();
        }
    };
    let answer = answer.status(status).header(header::CONTENT_LENGTH, len);
    if method == Method::HEAD {
        count("head");
        return answer.body(Body::empty()).unwrap_or_else(|e| unavailable(&e));
    }
    let stream = match files.js.get_stream_no_info(files.topology.files_bucket_config().name).await {
        Ok(stream) => stream,
        Err(e) => return unavailable(&e),
    };
    let mut chunks = Chunks::new(stream, &info, start, len);
    // The first chunk before the status line, so that NATS failing shows as
    // a 503 FastGPT may retry rather than as a download cut short.
    let first = match chunks.next_chunk().await {
        Ok(first) => first,
        Err(ChunkError::Gone { .. }) => return not_found("gone"),
        Err(e) => return unavailable(&e),
    };
    count(if status == StatusCode::OK { "served" } else { "served_range" });
    tracing::info!(%object, size, start, len, "serving a file");
    let rest = futures::stream::try_unfold(chunks, |mut chunks| async move {
        Ok::<_, ChunkError>(chunks.next_chunk().await?.map(|chunk| (chunk, chunks)))
    });
    let chunks = futures::stream::iter(first.map(Ok::<_, ChunkError>)).chain(rest).inspect_err(|e| {
        count("broken_off");
        tracing::warn!(error = %e, "a file download broke off");
    });
    let body = Body::from_stream(chunks);
    answer.body(body).unwrap_or_else(|e| unavailable(&e))
}

/// Why a download stopped (after its answer started, the connection is cut:
/// the client sees fewer bytes than `Content-Length` announced).
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("chunk {index} of the object is gone (replaced or expired while being read)")]
    Gone { index: u64 },
    #[error("cannot read chunk {index} of the object from NATS: {source}")]
    Nats { index: u64, source: stream::RawMessageError },
}

/// One download's chunks, fetched from the files bucket's stream one
/// request at a time, each only when the body asks for the next.
///
/// Why not async-nats's `ObjectStore::get`: the reader it returns keeps only
/// the rest of one chunk itself, but fills it from an ordered *push*
/// consumer, which the server feeds as fast as it can into the client's
/// subscription buffer (64 Ki messages by default). Its flow control is
/// answered as the reader consumes, but the server only waits for an answer
/// once megabytes are unanswered; so a client that stops reading left
/// megabytes of the file in the ingress's memory (about 4 MiB per stalled
/// download of a 10 MiB file, measured), and an ephemeral consumer on the
/// server, until it went away.
///
/// Here nothing is pushed: each chunk (128 KiB as the relay stores them) is
/// one request for the next message on the object's chunk subject, sent
/// when hyper polls the body, which it does only while the connection's
/// write buffer has room (hyper's 400 KiB). A download thus holds that
/// buffer and the chunk being decoded, whatever the client does (about
/// 1.4 MiB per stalled download measured, allocator included), and nothing
/// on the server. The requests go to the stream's leader (not `direct`
/// gets, which any replica may answer before it holds a new file), as the
/// consumer's did. A range drops the chunks before its start one at a time
/// (chunk sizes are not indexed), never more than one in memory.
struct Chunks {
    stream: stream::Stream<()>,
    /// `$O.{bucket}.C.{nuid}`: where this object's chunks are, in order.
    subject: String,
    /// The stream sequence to look for the next chunk from.
    next: u64,
    /// Chunks read so far (for the error).
    read: u64,
    /// Bytes of the object still to drop (a range's start), then to send.
    skip: u64,
    left: u64,
}

impl Chunks {
    fn new(stream: stream::Stream<()>, info: &object_store::ObjectInfo, start: u64, len: u64) -> Self {
        Self {
            stream,
            subject: format!("$O.{}.C.{}", info.bucket, info.nuid),
            next: 1,
            read: 0,
            skip: start,
            left: len,
        }
    }

    /// The next bytes to send, `None` once all were.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, ChunkError> {
        while self.left > 0 {
            let index = self.read;
            let message = match self.stream.get_first_raw_message_by_subject(&self.subject, self.next).await {
                Ok(message) => message,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    return Err(ChunkError::Gone { index })
                }
                Err(source) => return Err(ChunkError::Nats { index, source }),
            };
            self.next = message.sequence.saturating_add(1);
            self.read += 1;
            let len = message.payload.len() as u64;
            if self.skip >= len {
                self.skip -= len;
                continue;
            }
            let mut chunk = message.payload.slice(self.skip as usize..);
            self.skip = 0;
            chunk.truncate(self.left.min(chunk.len() as u64) as usize);
            self.left -= chunk.len() as u64;
            if !chunk.is_empty() {
                return Ok(Some(chunk));
            }
        }
        Ok(None)
    }
}

/// The stored MIME type when it is a plain `type/subtype[; param]` (it is
/// ours, but it becomes a header): else `application/octet-stream`.
fn content_type(stored: Option<&String>) -> HeaderValue {
    stored
        .filter(|t| t.len() <= 200 && t.contains('/') && t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"))
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266):
/// readers that only know `filename` get a plain ASCII name with the same
/// extension (FastGPT reads the extension from it), the others the whole name.
fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '.' | '_' | '(' | ')') { c } else { '_' })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHAR);
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// RFC 5987's `attr-char`, which `filename*` may hold unencoded.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    /// No range, a range in another unit, several ranges, or one that does
    /// not parse: the whole object (RFC 9110 lets a server ignore `Range`).
    Whole,
    Part {
        start: u64,
        len: u64,
    },
    /// A range that starts past the end.
    Unsatisfiable,
}

fn byte_range(header: Option<&str>, size: u64) -> Ranged {
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ranged::Whole };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else { return Ranged::Whole };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => {
                let start = size.saturating_sub(n);
                Ranged::Part { start, len: size - start }
            }
            None => Ranged::Whole,
        },
        // `bytes=S-`: from S to the end.
        (false, true) => match number(first) {
            Some(start) if start >= size => Ranged::Unsatisfiable,
            Some(start) => Ranged::Part { start, len: size - start },
            None => Ranged::Whole,
        },
        // `bytes=S-E`, E inclusive and cut at the end.
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if end >= start => {
                if start >= size {
                    Ranged::Unsatisfiable
                } else {
                    Ranged::Part { start, len: end.min(size - 1) - start + 1 }
                }
            }
            _ => Ranged::Whole,
        },
        (true, true) => Ranged::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_as_fastgpt_may_ask_them() {
        assert_eq!(byte_range(None, 10), Ranged::Whole);
        assert_eq!(byte_range(Some("bytes=0-3"), 10), Ranged::Part { start: 0, len: 4 });
        assert_eq!(byte_range(Some("bytes=5-"), 10), Ranged::Part { start: 5, len: 5 });
        assert_eq!(byte_range(Some("bytes=-3"), 10), Ranged::Part { start: 7, len: 3 });
        assert_eq!(byte_range(Some("bytes=-30"), 10), Ranged::Part { start: 0, len: 10 });
        assert_eq!(byte_range(Some("bytes=8-100"), 10), Ranged::Part { start: 8, len: 2 }, "cut at the end");
        assert_eq!(byte_range(Some("bytes=9-9"), 10), Ranged::Part { start: 9, len: 1 });
    }

    #[test]
    fn ranges_past_the_end_and_odd_ones() {
        assert_eq!(byte_range(Some("bytes=10-"), 10), Ranged::Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=10-20"), 10), Ranged::Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=-0"), 10), Ranged::Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=0-0"), 0), Ranged::Unsatisfiable);
        for ignored in ["bytes=0-1,4-5", "items=0-1", "bytes=5-2", "bytes=a-b", "bytes=-", "bytes=+1-2", "0-1"] {
            assert_eq!(byte_range(Some(ignored), 10), Ranged::Whole, "{ignored}");
        }
        assert_eq!(byte_range(Some("bytes=99999999999999999999-"), 10), Ranged::Whole, "too long a number");
    }

    #[test]
    fn the_file_name_header_is_safe_and_keeps_the_extension() {
        let h = content_disposition("季度 报告.xlsx");
        let h = h.to_str().expect("ASCII");
        assert!(h.starts_with("attachment; filename=\"__ __.xlsx\"; filename*=UTF-8''"), "{h}");
        assert!(h.ends_with("%E5%AD%A3%E5%BA%A6%20%E6%8A%A5%E5%91%8A.xlsx"), "{h}");
        let h = content_disposition("a\"b\r\nc.pdf");
        assert!(!h.to_str().expect("ASCII").contains(['\r', '\n']), "{h:?}");
        assert!(h.to_str().expect("ASCII").contains("filename=\"a_b__c.pdf\""), "{h:?}");
    }

    #[test]
    fn a_stored_type_becomes_a_header_only_when_plain() {
        let t = |s: &str| content_type(Some(&s.to_owned()));
        assert_eq!(t("text/csv; charset=utf-8"), "text/csv; charset=utf-8");
        assert_eq!(t("text/html\r\nX-Evil: 1"), "application/octet-stream");
        assert_eq!(t("nonsense"), "application/octet-stream");
        assert_eq!(content_type(None), "application/octet-stream");
    }
}
