//! The page's one action: re-drive the dead letters of a channel, or one of
//! them, as `responder --redrive` does. The form each channel's section
//! carries, its `POST /status/redrive` (admin token, then the form's CSRF
//! token, then the site the browser says it came from), and the notice on
//! the page it redirects back to.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::dead_letter;
use subtle::ConstantTimeEq;

use super::html::{esc, html_headers};
use super::{authorized, csrf_token, refuse, StatusPage};

pub(super) fn redrive_form(csrf: &str, channel: &str, sequence: Option<u64>, label: &str) -> String {
    let sequence =
        sequence.map(|s| format!("<input type=\"hidden\" name=\"sequence\" value=\"{s}\">")).unwrap_or_default();
    format!(
        "<form method=\"post\" action=\"/status/redrive\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"channel\" value=\"{}\">{sequence}<button type=\"submit\">{}</button></form>",
        esc(csrf),
        esc(channel),
        esc(label)
    )
}

/// What the last action did, from the query string of the page it
/// redirected to (numbers only: nothing a link could inject).
pub(super) fn notice(uri: &Uri) -> String {
    let query = uri.query().unwrap_or("");
    let mut redriven = None;
    let mut missing = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "redriven" => redriven = v.parse::<u64>().ok(),
            "gone" => missing = true,
            _ => {}
        }
    }
    match (redriven, missing) {
        (Some(n), _) => format!(
            "<p class=\"notice\" data-notice>Re-drove {n} dead letter(s): they are back in work and will be answered \
             in a moment (reload to see).</p>"
        ),
        (None, true) => "<p class=\"notice\" data-notice>That dead letter is no longer there (re-driven already, \
                         or expired).</p>"
            .to_owned(),
        (None, false) => String::new(),
    }
}

/// The re-drive form's fields.
#[derive(Debug, Default, PartialEq)]
struct RedriveForm {
    csrf: String,
    channel: String,
    sequence: Option<u64>,
}

fn parse_form(body: &[u8]) -> RedriveForm {
    let mut form = RedriveForm::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        match &*k {
            "csrf" => form.csrf = v.into_owned(),
            "channel" => form.channel = v.into_owned(),
            "sequence" => form.sequence = v.parse().ok(),
            _ => {}
        }
    }
    form
}

/// True when a browser says the form came from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    // A browser that says where the request came from is believed (an
    // Origin may be "null" for a same-site form under a strict referrer
    // policy); an older one's Origin must name this host.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site != "same-origin" && site != "none";
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(o), Some(h)) => {
            let authority = o.split_once("://").map(|(_, a)| a).unwrap_or(o);
            authority != h
        }
        (Some(_), None) => true,
        _ => false,
    }
}

fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_owned()), (header::CACHE_CONTROL, "no-store".to_owned())])
        .into_response()
}

/// `POST /status/redrive`: the dead letters of a channel (or the one at
/// `sequence`) back into work, as `responder --redrive` does; then back to
/// the page, which says how many.
pub(super) async fn redrive(State(page): State<Arc<StatusPage>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    let form = parse_form(&body);
    let expected = csrf_token(&page);
    let csrf_ok = !expected.is_empty() && bool::from(form.csrf.as_bytes().ct_eq(expected.as_bytes()));
    if !csrf_ok {
        return (StatusCode::FORBIDDEN, html_headers(), "the form's CSRF token is missing or wrong: reload /status\n")
            .into_response();
    }
    if cross_site(&headers) {
        tracing::warn!(origin = ?headers.get(header::ORIGIN), fetch_site = ?headers.get("sec-fetch-site"), host = ?headers.get(header::HOST), "re-drive form from another site refused");
        return (
            StatusCode::FORBIDDEN,
            html_headers(),
            "this form came from another site: open /status and use its buttons\n",
        )
            .into_response();
    }
    let Some(channel) = page.channels.iter().find(|c| c.id == form.channel) else {
        return (StatusCode::BAD_REQUEST, "no such channel\n").into_response();
    };
    let anchor =
        format!("#channel-{}", percent_encoding::utf8_percent_encode(&channel.id, percent_encoding::NON_ALPHANUMERIC));
    let result = match form.sequence {
        // Only a letter of the channel the form names.
        Some(seq) => dead_letter::redrive_one(&page.js, &page.topology, seq, Some(&channel.id))
            .await
            .map(|done| done.then_some(1)),
        None => dead_letter::redrive(&page.js, &page.topology, Some(&channel.id)).await.map(Some),
    };
    match result {
        Ok(Some(n)) => {
            tracing::info!(channel = %channel.id, redriven = n, "dead letters re-driven from the status page");
            see_other(&format!("/status?redriven={n}{anchor}"))
        }
        Ok(None) => see_other(&format!("/status?gone=1{anchor}")),
        Err(e) => {
            tracing::warn!(channel = %channel.id, error = %e, "re-drive from the status page failed");
            (StatusCode::SERVICE_UNAVAILABLE, html_headers(), format!("re-drive failed: {e}; try again\n"))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_parses_and_a_foreign_origin_is_refused() {
        let f = parse_form(b"csrf=abc&channel=sup%20port&sequence=12&x=1");
        assert_eq!(f, RedriveForm { csrf: "abc".into(), channel: "sup port".into(), sequence: Some(12) });
        assert_eq!(parse_form(b"sequence=nope").sequence, None);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, axum::http::HeaderValue::from_static(v));
            }
            h
        };
        assert!(!cross_site(&headers(&[("host", "bridge:8080"), ("origin", "http://bridge:8080")])));
        assert!(!cross_site(&headers(&[("host", "bridge:8080")])), "a client without Origin (curl)");
        assert!(cross_site(&headers(&[("host", "bridge:8080"), ("origin", "https://evil.example")])));
        assert!(cross_site(&headers(&[("host", "bridge:8080"), ("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&headers(&[
            ("host", "bridge:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(cross_site(&headers(&[("host", "bridge:8080"), ("origin", "null")])));
    }
}
