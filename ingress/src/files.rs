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

use std::sync::Arc;

use async_nats::jetstream::{self, object_store};
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
use tokio::io::AsyncReadExt;
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
        None => {
            tracing::info!(
                "files are off: no /files/ route (set ingress.files_signing_key and ingress.public_url to enable them)"
            );
            Router::new()
        }
    }
}

pub fn router(files: Arc<Files>) -> Router {
    // `get` answers HEAD too (without a body); the handler skips the read then.
    Router::new().route("/files/{object}/{name}", get(serve)).with_state(files)
}

fn count(outcome: &'static str) {
    metrics::counter!("lark_bridge_ingress_files_total", "outcome" => outcome).increment(1);
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
    let mut reader = match store.get(&object).await {
        Ok(reader) => reader,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return not_found("gone"),
        Err(e) => return unavailable(&e),
    };
    if start > 0 {
        if let Err(e) = tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink()).await {
            return unavailable(&e);
        }
    }
    count(if status == StatusCode::OK { "served" } else { "served_range" });
    tracing::info!(%object, size, start, len, "serving a file");
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader.take(len)));
    answer.body(body).unwrap_or_else(|e| unavailable(&e))
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
