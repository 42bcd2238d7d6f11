//! `GET /status`: the page an operator reads, built as one string of HTML
//! with no JavaScript. Every value in it goes through [`esc`] (an error text
//! can echo what a sender wrote), and it is served with headers that forbid
//! scripts, frames and forms aimed elsewhere, so a missed escape could still
//! run nothing.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};

use super::advice::health;
use super::redrive::{notice, redrive_form};
use super::time::{duration_ms, exact, when};
use super::{authorized, csrf_token, gather, refuse, ChannelStatus, LarkCalls, StatusPage};

/// `s` safe in HTML text and in a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn lark_calls_cell(calls: &Option<LarkCalls>) -> String {
    match calls {
        None => "<span class=\"muted\">not counted yet</span>".to_owned(),
        Some(LarkCalls { month, calls, budget: Some(budget), state }) => {
            let share = if *budget == 0 { 100 } else { calls.saturating_mul(100) / budget };
            let class = match share {
                0..=79 => "good",
                80..=99 => "warn",
                _ => "bad",
            };
            let said =
                if share >= 90 { format!("<br><span class=\"muted\">{}</span>", esc(state)) } else { String::new() };
            format!(
                "{calls} of {budget} in {} <span class=\"badge {class}\">{share} % of the budget</span>{said}",
                esc(month)
            )
        }
        Some(LarkCalls { month, calls, budget: None, .. }) => format!("{calls} in {} (no budget set)", esc(month)),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#1d2129;background:#f7f8fa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:0}\
section{background:#fff;border:1px solid #dee0e3;border-radius:8px;padding:1em 1.2em;margin:1em 0;max-width:70em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.35em .6em;border-top:1px solid #eff0f1}\
th{width:14em;color:#4e5969;font-weight:600}.muted{color:#86909c}.fix{color:#1d2129}\
.badge{display:inline-block;border-radius:1em;padding:.05em .7em;font-size:.85em;margin-left:.6em}\
.good{background:#e8f7ee;color:#136c2e}.warn{background:#fff3e0;color:#a15c00}.bad{background:#fdecec;color:#b42318}.idle{background:#eef0f3;color:#4e5969}\
.error{white-space:pre-wrap;word-break:break-word}.next{background:#f2f6ff;border-radius:6px;padding:.6em .8em;margin-top:.8em}\
form{display:inline;margin:0}button{font:inherit;padding:.2em .8em;cursor:pointer}\
.letters td{font-size:.92em}.letters th{width:auto}.letters td:first-child,.letters td:nth-child(2){white-space:nowrap}.notice{background:#e8f7ee;border:1px solid #b7e1c3;border-radius:6px;padding:.6em .8em;max-width:70em}\
.figures span{margin-right:1.5em}time{border-bottom:1px dotted #86909c}";

fn channel_section(out: &mut String, now: SystemTime, csrf: &str, c: &ChannelStatus) {
    let (state, class) = health(c);
    let _ = write!(
        out,
        "<section id=\"channel-{id}\" data-channel=\"{id}\"><h2>{id}<span class=\"badge {class}\" data-state>{state}</span></h2><table>",
        id = esc(&c.channel)
    );
    let mode = match &c.long_connection {
        Some(l) => {
            let mut s =
                format!("long connection: <span data-connections>{} of {} up</span> (this replica)", l.up, l.wanted);
            if let Some(t) = &l.last_connected_at {
                let _ = write!(s, ", connected {}", when(now, Some(t)));
            }
            let _ = write!(s, ", last event over it {}", when(now, l.last_event_at.as_deref()));
            if let Some(p) = &l.last_problem {
                let _ = write!(s, "<br><span class=\"error\">last problem: {}</span>", esc(p));
            }
            s
        }
        None if c.mode == "long_connection" => "long connection (none opened by this replica yet)".to_owned(),
        None => "webhook (Lark posts each event to <code>/lark/".to_owned() + &esc(&c.channel) + "/events</code>)",
    };
    let _ = write!(out, "<tr><th>Mode</th><td>{mode}</td></tr>");
    let _ = write!(
        out,
        "<tr><th>Last event received</th><td data-field=\"last_event_received\">{}</td></tr>\
         <tr><th>Last question answered</th><td data-field=\"last_question_answered\">{}</td></tr>\
         <tr><th>Last answer sent</th><td data-field=\"last_answer_sent\">{}</td></tr>",
        when(now, c.last_event_received.as_deref()),
        when(now, c.last_question_answered.as_deref()),
        when(now, c.last_answer_sent.as_deref()),
    );
    let error = match &c.last_error {
        Some((stage, e)) => format!(
            "<b>{}</b>, {}<div class=\"error\" data-field=\"error_what\">{}</div><div class=\"fix\"><i>fix:</i> {}</div>",
            esc(stage),
            when(now, Some(&e.at)),
            esc(&e.what),
            esc(&e.fix)
        ),
        None => "<span class=\"muted\">none</span>".into(),
    };
    let _ = write!(out, "<tr><th>Last error</th><td data-field=\"last_error\">{error}</td></tr>");
    let _ = write!(
        out,
        "<tr><th>Last hour</th><td class=\"figures\"><span><b data-field=\"events_last_hour\">{}</b> {}</span>\
         <span><b data-field=\"answers_last_hour\">{}</b> {}</span>\
         <span title=\"median time from the event stored to the answer shown in Lark\">answer time p50: \
         <b data-field=\"answer_latency_p50\">{}</b></span>\
         <span class=\"muted\" title=\"median time from the event stored to FastGPT's answer\">of which FastGPT: {}</span></td></tr>",
        c.events_last_hour,
        if c.events_last_hour == 1 { "event" } else { "events" },
        c.answers_last_hour,
        if c.answers_last_hour == 1 { "answer" } else { "answers" },
        duration_ms(c.answer_latency_p50_ms),
        duration_ms(c.question_latency_p50_ms),
    );
    let _ = write!(
        out,
        "<tr><th>Lark API calls this month</th><td data-field=\"lark_calls\">{}</td></tr>",
        lark_calls_cell(&c.lark_calls)
    );
    let _ = write!(
        out,
        "<tr><th>Dead letters</th><td data-field=\"dead_letters\"><b data-field=\"dead_letters_waiting\">{}</b> waiting",
        c.dead_letters_waiting
    );
    if c.dead_letters_waiting > 0 {
        out.push(' ');
        out.push_str(&redrive_form(csrf, &c.channel, None, &format!("Re-drive all {}", c.dead_letters_waiting)));
    }
    if !c.dead_letters.is_empty() {
        out.push_str("<table class=\"letters\"><tr><th>when</th><th>died in</th><th>reason</th><th></th></tr>");
        for l in &c.dead_letters {
            let at = when(now, Some(&l.at));
            let _ = write!(
                out,
                "<tr data-sequence=\"{seq}\"><td>{at}</td><td>{}</td><td class=\"error\">{}</td><td>{}</td></tr>",
                esc(&l.stage),
                esc(&l.reason),
                redrive_form(csrf, &c.channel, Some(l.sequence), "Re-drive"),
                seq = l.sequence,
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</td></tr></table>");
    let _ = write!(
        out,
        "<div class=\"next\"><b>Next:</b> <span data-field=\"advice\">{}</span></div></section>",
        esc(&c.advice)
    );
}

/// The headers of every HTML answer: no script may run, no other site may
/// frame the page or receive its forms, and nothing is cached.
pub(super) fn html_headers() -> [(header::HeaderName, &'static str); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

/// `GET /status`.
pub(super) async fn page(State(page): State<Arc<StatusPage>>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    let now = SystemTime::now();
    let csrf = csrf_token(&page);
    let channels = gather::collect(&page).await;
    let mut body = String::new();
    let attention = channels.iter().filter(|c| health(c).1 != "good" && health(c).1 != "idle").count();
    let _ = write!(
        body,
        "<p>{} channel(s){}. Generated {}; the services report every two seconds. Reload for news.</p>{}",
        channels.len(),
        if attention > 0 { format!(", <b>{attention} needing attention</b>") } else { String::new() },
        esc(&exact(now)),
        notice(&uri),
    );
    for c in &channels {
        channel_section(&mut body, now, &csrf, c);
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>lark-bridge status</title><style>{STYLE}</style></head><body>\
         <h1>lark-bridge status</h1>{body}\
         <p class=\"muted\">Hover over a time for the exact UTC time. Figures of the last hour add up every replica; \
         a long connection's state is this replica's. <a href=\"/status.json\">JSON</a></p></body></html>"
    );
    (html_headers(), Html(html)).into_response()
}

#[cfg(test)]
mod tests {
    use super::super::advice::advice;
    use super::super::gather::status;
    use super::super::DeadLetterView;
    use super::*;

    #[test]
    fn every_value_is_escaped_and_the_lark_calls_cell_says_what_it_knows() {
        let mut c = status();
        c.channel = "x\"><script>".into();
        let e = common::status::StatusError {
            at: "2026-01-01T10:00:00Z".into(),
            what: "<img src=x onerror=alert(1)>'".into(),
            fix: "<u>".into(),
        };
        c.last_error = Some(("relay".into(), e));
        c.dead_letters_waiting = 1;
        c.dead_letters = vec![DeadLetterView {
            sequence: 7,
            stage: "responder".into(),
            reason: "<svg onload=x>".into(),
            at: "2026-01-01T10:00:00Z".into(),
        }];
        c.advice = advice(&c);
        let mut out = String::new();
        channel_section(&mut out, SystemTime::now(), "tok\"", &c);
        for raw in ["<img", "<script", "<svg", "<u>", "tok\""] {
            assert!(!out.contains(raw), "{raw} unescaped in {out}");
        }
        assert!(
            out.contains("&lt;img src=x onerror=alert(1)&gt;&#39;") && out.contains("name=\"sequence\" value=\"7\"")
        );
        assert!(out.contains("not counted yet"));
        let calls =
            |budget| Some(LarkCalls { month: "2026-01".into(), calls: 850, budget, state: "within budget".into() });
        assert!(
            lark_calls_cell(&calls(Some(1000))).contains("850 of 1000")
                && lark_calls_cell(&calls(Some(1000))).contains("85 %")
        );
        assert!(lark_calls_cell(&calls(None)).contains("no budget set"));
    }
}
