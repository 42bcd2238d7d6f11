//! Dead letters: what cannot be handled ends in `{ns}_dead` with the reason
//! and the original message, never silently. Kept 14 days.
//! `responder --dead-letters` lists them with their reasons, and
//! `responder --redrive [--channel ID]` publishes them back once the cause is
//! fixed (README, "Dead letters"). The status page shows the newest
//! ([`list_newest`]) and re-drives with the same code ([`redrive`],
//! [`redrive_one`]).

use async_nats::jetstream;
use async_nats::HeaderMap;

use crate::envelope::{header, CHANNEL_HEADER, MSG_ID_HEADER};
use crate::topology::{Subject, Topology};

/// Why the message died, in words an operator can act on.
pub const REASON_HEADER: &str = "Lark-Bridge-Dead-Reason";
/// The subject the message was on, so a re-drive puts it back there.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Lark-Bridge-Original-Subject";

/// Publishes `message` (as it was: body, subject, id) to the dead-letter
/// stream with the reason; `stage` is where it died (`relay`, `responder`).
pub async fn publish(
    js: &jetstream::Context,
    topology: &Topology,
    stage: &str,
    channel: &str,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), async_nats::Error> {
    let mut headers = HeaderMap::new();
    headers.insert(CHANNEL_HEADER, channel);
    headers.insert(REASON_HEADER, reason.replace(['\r', '\n'], " ").as_str());
    headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
    if let Some(id) = header(message.headers.as_ref(), MSG_ID_HEADER.as_ref()) {
        headers.insert(MSG_ID_HEADER, format!("dead:{id}").as_str());
    }
    js.publish_with_headers(topology.dead_subject(channel, stage), headers, message.payload.clone()).await?.await?;
    metrics::counter!(crate::metric_names::DEAD_LETTERS_TOTAL, "channel" => channel.to_owned(), "stage" => stage.to_owned())
        .increment(1);
    Ok(())
}

/// One dead letter, as listed for an operator.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub sequence: u64,
    pub channel: String,
    pub stage: String,
    pub reason: String,
    pub original_subject: String,
    pub time: String,
    /// `time`, for a page that says how long ago.
    pub at: std::time::SystemTime,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter stream: {0}")]
pub struct DeadLetterError(String);

fn err(e: impl std::fmt::Display) -> DeadLetterError {
    DeadLetterError(e.to_string())
}

fn letter(topology: &Topology, seq: u64, msg: &async_nats::jetstream::message::StreamMessage) -> DeadLetter {
    DeadLetter {
        sequence: seq,
        channel: header(Some(&msg.headers), CHANNEL_HEADER).unwrap_or("?").to_owned(),
        stage: match topology.parse(&msg.subject) {
            Some(Subject::Dead { stage, .. }) => stage.to_owned(),
            _ => "?".to_owned(),
        },
        reason: header(Some(&msg.headers), REASON_HEADER).unwrap_or("").to_owned(),
        original_subject: header(Some(&msg.headers), ORIGINAL_SUBJECT_HEADER).unwrap_or("").to_owned(),
        time: msg.time.to_string(),
        at: std::time::SystemTime::from(msg.time),
    }
}

/// Every dead letter waiting, optionally of one channel, oldest first.
pub async fn list(
    js: &jetstream::Context,
    topology: &Topology,
    channel: Option<&str>,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let mut out = Vec::new();
    for_each(js, topology, channel, |seq, msg| out.push(letter(topology, seq, &msg))).await?;
    Ok(out)
}

/// The newest `max` dead letters of any channel, newest first, and how many
/// are waiting in all: what a page can show without reading thousands.
pub async fn list_newest(
    js: &jetstream::Context,
    topology: &Topology,
    max: usize,
) -> Result<(Vec<DeadLetter>, u64), DeadLetterError> {
    let mut stream = js.get_stream(topology.dead_stream()).await.map_err(err)?;
    let state = stream.info().await.map_err(err)?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok((out, 0));
    }
    let mut seq = state.last_sequence;
    while seq >= state.first_sequence && out.len() < max {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push(letter(topology, seq, &msg));
        }
        if seq == 0 {
            break;
        }
        seq -= 1;
    }
    Ok((out, state.messages))
}

/// Re-drives the one dead letter at `sequence` (as [`redrive`] does), when
/// it is of `channel` (any, for `None`); false when it is no longer there
/// (re-driven already, or expired) or of another channel.
pub async fn redrive_one(
    js: &jetstream::Context,
    topology: &Topology,
    sequence: u64,
    channel: Option<&str>,
) -> Result<bool, DeadLetterError> {
    let stream = js.get_stream(topology.dead_stream()).await.map_err(err)?;
    let Ok(msg) = stream.get_raw_message(sequence).await else { return Ok(false) };
    if channel.is_some_and(|c| header(Some(&msg.headers), CHANNEL_HEADER) != Some(c)) {
        return Ok(false);
    }
    put_back(js, &stream, topology, sequence, msg).await
}

/// Publishes each dead letter (optionally of one channel) back onto the
/// subject it died on, then deletes it: once the cause is fixed (a permission
/// granted, the bot added to the group), the replies go out. Lark's `uuid`
/// and the relay's answered-events record keep a re-drive from doubling
/// anything that did get through. Returns how many were re-driven.
pub async fn redrive(
    js: &jetstream::Context,
    topology: &Topology,
    channel: Option<&str>,
) -> Result<usize, DeadLetterError> {
    let stream = js.get_stream(topology.dead_stream()).await.map_err(err)?;
    let mut letters = Vec::new();
    for_each(js, topology, channel, |seq, msg| letters.push((seq, msg))).await?;
    let mut count = 0;
    for (seq, msg) in letters {
        count += usize::from(put_back(js, &stream, topology, seq, msg).await?);
    }
    Ok(count)
}

/// One dead letter back on the subject it died on, then deleted; false when
/// it names no subject.
async fn put_back(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    topology: &Topology,
    seq: u64,
    msg: async_nats::jetstream::message::StreamMessage,
) -> Result<bool, DeadLetterError> {
    let Some(subject) = header(Some(&msg.headers), ORIGINAL_SUBJECT_HEADER).map(|s| topology.current_subject(s)) else {
        return Ok(false);
    };
    let mut headers = HeaderMap::new();
    for name in [CHANNEL_HEADER, crate::envelope::TRACEPARENT_HEADER] {
        if let Some(v) = header(Some(&msg.headers), name) {
            headers.insert(name, v);
        }
    }
    // A fresh id, so JetStream's duplicate window does not swallow it.
    let id = header(Some(&msg.headers), MSG_ID_HEADER.as_ref()).unwrap_or("dead");
    headers.insert(MSG_ID_HEADER, format!("{id}:redrive:{seq}").as_str());
    js.publish_with_headers(subject, headers, msg.payload.clone()).await.map_err(err)?.await.map_err(err)?;
    stream.delete_message(seq).await.map_err(err)?;
    Ok(true)
}

async fn for_each(
    js: &jetstream::Context,
    topology: &Topology,
    channel: Option<&str>,
    mut f: impl FnMut(u64, async_nats::jetstream::message::StreamMessage),
) -> Result<(), DeadLetterError> {
    let mut stream = js.get_stream(topology.dead_stream()).await.map_err(err)?;
    let state = stream.info().await.map_err(err)?.state.clone();
    if state.messages == 0 {
        return Ok(());
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(msg) = stream.get_raw_message(seq).await else { continue };
        if channel.is_some_and(|c| header(Some(&msg.headers), CHANNEL_HEADER) != Some(c)) {
            continue;
        }
        f(seq, msg);
    }
    Ok(())
}
