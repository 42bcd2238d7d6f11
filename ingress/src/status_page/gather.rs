//! What the page knows of each channel, gathered afresh on every request:
//! when an event was last received, a question last answered and an answer
//! last sent, and the newest error (from the status bucket every service
//! writes to); the counts and median latencies of the last hour (from its
//! activity keys); the dead letters waiting (from the dead-letter stream);
//! the Lark API calls this month; and this replica's long connections.
//! `/status.json` serves it as it is, and the HTML page is drawn from it, so
//! the two never disagree.

use std::collections::HashMap;
use std::time::SystemTime;

use async_nats::jetstream::kv;
use common::activity;
use common::dead_letter::{self, DeadLetter};
use common::service_name::Service;
use common::status::{read, read_activity, StageStatus};
use serde::Serialize;

use super::advice::advice;
use super::time::sortable;
use super::{PageChannel, StatusPage, DEAD_LETTERS_SHOWN};

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
    /// What to look at next, from the fields above ([`advice`](fn@super::advice)).
    pub advice: String,
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

pub(super) async fn collect(page: &StatusPage) -> Vec<ChannelStatus> {
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

/// A channel with nothing to show yet, for the tests of what the page makes
/// of a row.
#[cfg(test)]
pub(super) fn status() -> ChannelStatus {
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
