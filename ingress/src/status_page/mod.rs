//! `GET /status` (HTML, no JavaScript) and `GET /status.json`: per channel,
//! its mode and long connections, the last event received, the last answer
//! sent, the last error with its fix, events and answers of the last hour
//! with the answers' median latency, Lark API calls this month, and the dead
//! letters waiting, each with a re-drive button. What an operator opens in
//! the morning, and the answer to "I sent a message but got no response".
//!
//! Off unless `ingress.admin_token` is set (`deploy/run-local` sets a fresh
//! one in sandbox mode and prints it); the token goes in
//! `Authorization: Bearer <token>`, or as the password of HTTP Basic
//! authentication so a browser can open the page (any user name). Every page
//! and action needs it.
//!
//! Safe to open on a hostile day: every value shown is escaped (an error text
//! can echo what a sender wrote), the page forbids scripts, frames and
//! foreign form targets (Content-Security-Policy), and the one action,
//! `POST /status/redrive`, needs a CSRF token that only the page carries (an
//! HMAC of the admin token: the same on every replica, unknown to another
//! site the browser visits while it remembers the Basic password).
//!
//! Under each channel, [`advice`] says what to look at next, from what the
//! row shows: nothing received yet, events but no answers, answers that do
//! not reach Lark, dead letters, or all well.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::{self, kv};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use common::activity;
use common::dead_letter::{self, DeadLetter};
use common::service_name::Service;
use common::status::{read, read_activity, StageStatus};
use common::topology::Topology;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use subtle::ConstantTimeEq;

/// Dead letters listed on the page (newest first); the count covers all.
pub const DEAD_LETTERS_SHOWN: usize = 50;

pub struct StatusPage {
    pub token: SecretString,
    pub channels: Vec<PageChannel>,
    /// The status bucket, opened on first use (it may not exist at start).
    pub store: tokio::sync::OnceCell<kv::Store>,
    pub js: jetstream::Context,
    pub topology: Topology,
    /// The long connections of this replica.
    pub connections: crate::long_connection::Board,
}

/// A configured channel, as the page names it.
#[derive(Debug, Clone)]
pub struct PageChannel {
    pub id: String,
    pub long_connection: bool,
    /// Its Lark app, whose calls this month the page shows.
    pub app_id: String,
    /// `lark_calls_per_month`, when set.
    pub lark_calls_per_month: Option<u64>,
}

pub fn router(page: StatusPage) -> Router {
    Router::new()
        .route("/status", get(html))
        .route("/status.json", get(json))
        .route("/status/redrive", post(redrive))
        .with_state(Arc::new(page))
}

/// The Lark API calls of a channel's app this month, against its budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LarkCalls {
    /// `YYYY-MM`, UTC.
    pub month: String,
    pub calls: u64,
    /// `channels[].lark_calls_per_month`, when set.
    pub budget: Option<u64>,
    /// What the bridge does about it, in words (answers go whole past 90 %).
    pub state: String,
}

/// A dead letter as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub sequence: u64,
    pub stage: String,
    pub reason: String,
    /// RFC 3339, UTC.
    pub at: String,
}

#[derive(Debug, Serialize)]
pub struct ChannelStatus {
    pub channel: String,
    /// `webhook` or `long_connection`.
    pub mode: &'static str,
    pub last_event_received: Option<String>,
    pub last_question_answered: Option<String>,
    pub last_answer_sent: Option<String>,
    /// The newest error of any service, with the service's name.
    pub last_error: Option<(String, common::status::StatusError)>,
    pub dead_letters_waiting: u64,
    /// The newest dead letters of this channel (at most [`DEAD_LETTERS_SHOWN`]
    /// over all channels).
    pub dead_letters: Vec<DeadLetterView>,
    /// A long-connection channel's connections in this replica (state, last
    /// event, last problem); `None` for a webhook channel.
    pub long_connection: Option<crate::long_connection::board::ChannelConnections>,
    /// Events the ingress replicas stored in the last hour.
    pub events_last_hour: u64,
    /// Questions FastGPT answered in the last hour, and their median time
    /// from the event stored to FastGPT's answer.
    pub questions_last_hour: u64,
    pub question_latency_p50_ms: Option<u64>,
    /// Answers shown in Lark in the last hour, and their median time from
    /// the event stored to the answer shown.
    pub answers_last_hour: u64,
    pub answer_latency_p50_ms: Option<u64>,
    /// `None` until the calls are counted.
    pub lark_calls: Option<LarkCalls>,
    /// What to look at next, from the fields above ([`advice`]).
    pub advice: String,
}

fn authorized(page: &StatusPage, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let given: Option<String> = if let Some(t) = value.strip_prefix("Bearer ") {
        Some(t.trim().to_owned())
    } else if let Some(b) = value.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| s.split_once(':').map(|(_, p)| p.to_owned()))
    } else {
        None
    };
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(page.token.expose_secret().as_bytes())))
}

fn refuse() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"lark-bridge status\", charset=\"UTF-8\"")],
        "the status page needs ingress.admin_token: Authorization: Bearer <token>, or it as the Basic password\n",
    )
        .into_response()
}

/// The CSRF token of the page's forms: an HMAC of the admin token, so every
/// replica computes the same one and no other site can.
fn csrf_token(page: &StatusPage) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(page.token.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(b"lark-bridge status page: re-drive form");
    hex::encode(mac.finalize().into_bytes())
}

/// The Lark API calls of `channel` this month. The one place the page reads
/// them.
async fn lark_calls(store: Option<&kv::Store>, channel: &PageChannel) -> Option<LarkCalls> {
    use common::lark::calls;
    let month = calls::month_of(SystemTime::now());
    let n = calls::read(store?, &channel.app_id, &month).await.ok()?;
    let usage = calls::MonthUsage { month, calls: n, budget: channel.lark_calls_per_month };
    let state = usage.state().to_owned();
    Some(LarkCalls { month: usage.month, calls: usage.calls, budget: usage.budget, state })
}

async fn collect(page: &StatusPage) -> Vec<ChannelStatus> {
    let mut dead_counts = HashMap::new();
    if let Ok(stream) = page.js.get_stream(page.topology.dead_stream()).await {
        let filter = page.topology.dead_filter();
        if let Ok(mut subjects) = stream.info_with_subjects(filter).await {
            use futures::StreamExt;
            while let Some(Ok((subject, count))) = subjects.next().await {
                if let Some(channel) = page.topology.parse(&subject).map(|s| s.channel()) {
                    *dead_counts.entry(channel.to_owned()).or_insert(0u64) += count as u64;
                }
            }
        }
    }
    let mut letters: HashMap<String, Vec<DeadLetterView>> = HashMap::new();
    if dead_counts.values().any(|n| *n > 0) {
        if let Ok((newest, _)) = dead_letter::list_newest(&page.js, &page.topology, DEAD_LETTERS_SHOWN).await {
            for l in newest {
                letters.entry(l.channel.clone()).or_default().push(view(&l));
            }
        }
    }
    let now = SystemTime::now();
    let mut out = Vec::new();
    let store = page.store.get_or_try_init(|| page.topology.status(&page.js)).await.ok();
    let activities = match store {
        Some(s) => read_activity(s).await,
        None => HashMap::new(),
    };
    for channel in &page.channels {
        let id = &channel.id;
        let stages = match store {
            Some(s) => read(s, id).await,
            None => Default::default(),
        };
        let [events, questions, answers] = Service::ALL.map(Service::name).map(|stage| {
            activities.get(&(id.clone(), stage.to_owned())).map(|s| activity::merge(s, now)).unwrap_or_default()
        });
        let ok = |s: &str| stages.get(s).and_then(|st: &StageStatus| st.last_ok_at.clone());
        let last_error = stages
            .iter()
            .filter_map(|(stage, st)| st.last_error.clone().map(|e| (stage.to_string(), e)))
            .max_by_key(|(_, e)| sortable(&e.at));
        let mut status = ChannelStatus {
            channel: id.clone(),
            mode: if channel.long_connection { "long_connection" } else { "webhook" },
            last_event_received: ok(Service::Ingress.name()),
            last_question_answered: ok(Service::Relay.name()),
            last_answer_sent: ok(Service::Responder.name()),
            last_error,
            dead_letters_waiting: dead_counts.get(id).copied().unwrap_or(0),
            dead_letters: letters.remove(id).unwrap_or_default(),
            long_connection: page.connections.get(id),
            events_last_hour: events.count,
            questions_last_hour: questions.count,
            question_latency_p50_ms: questions.p50_ms,
            answers_last_hour: answers.count,
            answer_latency_p50_ms: answers.p50_ms,
            lark_calls: lark_calls(store, channel).await,
            advice: String::new(),
        };
        status.advice = advice(&status);
        out.push(status);
    }
    out
}

fn view(l: &DeadLetter) -> DeadLetterView {
    DeadLetterView {
        sequence: l.sequence,
        stage: l.stage.clone(),
        reason: l.reason.clone(),
        at: common::status::rfc3339(l.at),
    }
}

/// An RFC 3339 time in UTC that compares as text: its fraction of a second
/// padded to nine digits (the status board writes as many as it needs).
fn sortable(t: &str) -> String {
    let Some((head, rest)) = t.split_once('.') else {
        return t.strip_suffix('Z').map_or_else(|| t.to_owned(), |h| format!("{h}.000000000Z"));
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    format!("{head}.{:0<9}{}", &rest[..digits], &rest[digits..])
}

/// True when the channel's last error came after its last answer sent.
fn error_after_last_answer(c: &ChannelStatus) -> bool {
    match (c.last_error.as_ref().map(|(_, e)| &e.at), &c.last_answer_sent) {
        (Some(error), Some(answer)) => sortable(error) > sortable(answer),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// What to look at next for one channel, from what its row shows.
pub fn advice(c: &ChannelStatus) -> String {
    let mut out = match (&c.last_event_received, &c.last_question_answered, &c.last_answer_sent) {
        (None, _, _) if c.long_connection.as_ref().is_some_and(|l| l.up == 0) => {
            "No long connection to Lark is up in this replica: see its last problem, and `ingress --check`.".to_owned()
        }
        (None, _, _) if c.long_connection.is_some() => "No event received yet: in the Lark console, check that \
                         Events & Callbacks uses the persistent connection mode with im.message.receive_v1, and that \
                         the app's version is published."
            .to_owned(),
        (None, _, _) => "No event received yet: check the Request URL and the event subscription \
                         (im.message.receive_v1) in the Lark console, and that the app's version is published. \
                         In the sandbox, send a message with `sandbox chat`."
            .to_owned(),
        (Some(_), None, _) => "Events arrive but no question was answered yet: see the last error, \
                               and the relay's log (FastGPT's root URL and API key: `relay --check`)."
            .to_owned(),
        (Some(_), Some(_), None) => "FastGPT answers but no answer reached Lark yet: usually a missing \
                                     permission (im:message:send_as_bot) or a version not published; \
                                     see the last error and `responder --check`."
            .to_owned(),
        (Some(_), Some(_), Some(_)) if error_after_last_answer(c) => {
            "Working, but the last error is newer than the last answer sent: see its fix.".to_owned()
        }
        (Some(_), Some(_), Some(_)) => "Working: events received, questions answered, answers sent.".to_owned(),
    };
    if c.dead_letters_waiting > 0 {
        let _ = write!(
            out,
            " {} dead letter(s) waiting: their reasons are listed below (and by `responder --dead-letters`); \
             fix the cause, then re-drive them with the button (or `responder --redrive`).",
            c.dead_letters_waiting
        );
    }
    out
}

/// How a channel looks at a glance: its badge's text and class.
fn health(c: &ChannelStatus) -> (&'static str, &'static str) {
    if c.long_connection.as_ref().is_some_and(|l| l.up == 0) {
        ("down", "bad")
    } else if c.dead_letters_waiting > 0 || error_after_last_answer(c) {
        ("needs attention", "warn")
    } else if c.last_answer_sent.is_some() {
        ("working", "good")
    } else {
        ("waiting for traffic", "idle")
    }
}

async fn json(State(page): State<Arc<StatusPage>>, headers: HeaderMap) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    Json(collect(&page).await).into_response()
}

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

/// An RFC 3339 UTC time (as the status board writes it) as a `SystemTime`.
fn parse_utc(t: &str) -> Option<SystemTime> {
    let (date, rest) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let clock = rest.strip_suffix('Z')?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.splitn(3, ':').map(|p| p.parse::<u8>().ok());
    let (h, min, sec) = (c.next()??, c.next()??, c.next()??);
    let nanos: u32 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").get(..9)?.parse().ok()? };
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date = time::Date::from_calendar_date(y, month, u8::try_from(day).ok()?).ok()?;
    let at = date.with_hms_nano(h, min, sec, nanos).ok()?.assume_utc();
    Some(SystemTime::from(at))
}

/// `at` to a person: "3 min ago" (or "in 2 s" for a clock a little ahead).
pub fn ago(now: SystemTime, at: SystemTime) -> String {
    let (secs, future) = match now.duration_since(at) {
        Ok(d) => (d.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    if secs < 2 {
        return "just now".to_owned();
    }
    let amount = match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The exact time shown on hover: `2026-01-01 10:00:02 UTC`.
fn exact(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A time as the page shows it: how long ago, the exact UTC time on hover.
fn when(now: SystemTime, t: Option<&str>) -> String {
    match t.and_then(|t| parse_utc(t).map(|at| (t, at))) {
        Some((raw, at)) => {
            format!("<time datetime=\"{}\" title=\"{}\">{}</time>", esc(raw), esc(&exact(at)), esc(&ago(now, at)))
        }
        None => match t {
            Some(raw) => esc(raw),
            None => "<span class=\"muted\">never</span>".to_owned(),
        },
    }
}

fn duration_ms(ms: Option<u64>) -> String {
    match ms {
        None => "<span class=\"muted\">no answer timed</span>".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
    }
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

fn redrive_form(csrf: &str, channel: &str, sequence: Option<u64>, label: &str) -> String {
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
fn html_headers() -> [(header::HeaderName, &'static str); 5] {
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

/// What the last action did, from the query string of the page it
/// redirected to (numbers only: nothing a link could inject).
fn notice(uri: &Uri) -> String {
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

async fn html(State(page): State<Arc<StatusPage>>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&page, &headers) {
        return refuse();
    }
    let now = SystemTime::now();
    let csrf = csrf_token(&page);
    let channels = collect(&page).await;
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
async fn redrive(State(page): State<Arc<StatusPage>>, headers: HeaderMap, body: Bytes) -> Response {
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

    fn status() -> ChannelStatus {
        ChannelStatus {
            channel: "c".into(),
            mode: "webhook",
            last_event_received: None,
            last_question_answered: None,
            last_answer_sent: None,
            last_error: None,
            dead_letters_waiting: 0,
            dead_letters: Vec::new(),
            long_connection: None,
            events_last_hour: 0,
            questions_last_hour: 0,
            question_latency_p50_ms: None,
            answers_last_hour: 0,
            answer_latency_p50_ms: None,
            lark_calls: None,
            advice: String::new(),
        }
    }

    fn error_at(at: &str) -> Option<(String, common::status::StatusError)> {
        let e = common::status::StatusError { at: at.into(), what: "w".into(), fix: "f".into() };
        Some(("responder".into(), e))
    }

    #[test]
    fn the_advice_follows_what_the_row_shows() {
        let mut c = status();
        assert!(advice(&c).starts_with("No event received yet"), "{}", advice(&c));

        c.last_event_received = Some("2026-01-01T10:00:00Z".into());
        assert!(advice(&c).starts_with("Events arrive but no question"), "{}", advice(&c));
        assert!(!advice(&c).contains("No event received"));

        c.last_question_answered = Some("2026-01-01T10:00:01Z".into());
        assert!(advice(&c).contains("im:message:send_as_bot"), "{}", advice(&c));

        c.last_answer_sent = Some("2026-01-01T10:00:02Z".into());
        assert!(advice(&c).starts_with("Working: "), "{}", advice(&c));
        c.last_error = error_at("2026-01-01T09:00:00Z");
        assert!(advice(&c).starts_with("Working: "), "an older error: {}", advice(&c));
        c.last_error = error_at("2026-01-01T11:00:00Z");
        assert!(advice(&c).contains("last error is newer"), "{}", advice(&c));

        c.last_error = error_at("2026-01-01T10:00:02.5Z");
        c.last_answer_sent = Some("2026-01-01T10:00:02.50000001Z".into());
        assert!(advice(&c).starts_with("Working: "), "fractions of a second compare as numbers: {}", advice(&c));
        assert_eq!(sortable("2026-01-01T10:00:02Z"), "2026-01-01T10:00:02.000000000Z");

        c.dead_letters_waiting = 2;
        assert!(advice(&c).contains("2 dead letter(s) waiting") && advice(&c).contains("--redrive"), "{}", advice(&c));
        assert!(advice(&c).contains("button"), "{}", advice(&c));
    }

    #[test]
    fn the_badge_says_working_only_when_answers_go_out_and_nothing_newer_failed() {
        let mut c = status();
        assert_eq!(health(&c).0, "waiting for traffic");
        c.last_event_received = Some("2026-01-01T10:00:00Z".into());
        c.last_error = error_at("2026-01-01T10:00:01Z");
        assert_eq!(health(&c).0, "needs attention", "events, an error, no answer");
        c.last_answer_sent = Some("2026-01-01T10:00:02Z".into());
        assert_eq!(health(&c).0, "working");
        c.dead_letters_waiting = 1;
        assert_eq!(health(&c).0, "needs attention");
        c.long_connection = Some(crate::long_connection::board::ChannelConnections { wanted: 1, ..Default::default() });
        assert_eq!(health(&c).0, "down");
    }

    #[test]
    fn a_long_connection_channel_gets_its_own_advice() {
        let mut c = status();
        c.long_connection = Some(crate::long_connection::board::ChannelConnections { wanted: 1, ..Default::default() });
        assert!(advice(&c).contains("No long connection to Lark is up"), "{}", advice(&c));
        c.long_connection =
            Some(crate::long_connection::board::ChannelConnections { wanted: 1, up: 1, ..Default::default() });
        assert!(advice(&c).contains("persistent connection mode"), "{}", advice(&c));
    }

    #[test]
    fn times_read_as_how_long_ago_with_the_exact_time_on_hover() {
        let at = parse_utc("2026-01-01T10:00:02.5Z").expect("parses");
        assert_eq!(
            parse_utc("2026-01-01T10:00:02Z").map(|t| at.duration_since(t).ok()),
            Some(Some(std::time::Duration::from_millis(500)))
        );
        assert!(parse_utc("yesterday").is_none() && parse_utc("2026-13-01T10:00:00Z").is_none());
        let now = at + std::time::Duration::from_secs(185);
        assert_eq!(ago(now, at), "3 min ago");
        assert_eq!(ago(at, at), "just now");
        assert_eq!(ago(at, now), "in 3 min");
        assert_eq!(ago(now + std::time::Duration::from_secs(3 * 86_400), at), "3 days ago");
        let shown = when(now, Some("2026-01-01T10:00:02.5Z"));
        assert!(shown.contains("title=\"2026-01-01 10:00:02 UTC\"") && shown.contains(">3 min ago</time>"), "{shown}");
        assert!(when(now, None).contains("never"));
        assert_eq!(when(now, Some("<b>")), "&lt;b&gt;", "an unreadable time is shown escaped");
    }

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
