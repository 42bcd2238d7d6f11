//! Waiting for the bot's replies to one message, as they reach the fake
//! Lark: when a reply is complete (a text, the parts of a card, a card that
//! streams until it closes), and the late replies to earlier messages.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::LarkUser;
use crate::fake_lark::{SandboxMessage, SandboxPage, Via};

/// The longest one look at the fake Lark waits for a message.
const LONG_POLL: Duration = Duration::from_secs(1);

/// How long to wait for a reply.
///
/// A text reply is always whole (the bridge sends an answer as text only when
/// it fits in one message), so the wait ends soon after it arrives: only a
/// question card may follow it (an answer that ends with a FastGPT question
/// is its text, then the card), and the chat waits [`TEXT_GRACE`] (or
/// `quiet`, when shorter) for one. A card may be the first of several parts,
/// and nothing in it says how many: after a card, the chat waits `quiet` for
/// the next part (the bridge sends the parts of one answer about 200 ms
/// apart) before it takes the reply as complete. Every part is printed when
/// it arrives, not after that wait.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Give up when no reply came within this.
    pub timeout: Duration,
    /// After a card arrived, wait this long for another part of the same answer.
    pub quiet: Duration,
    /// The least time between two looks at a fake Lark that answers at once
    /// (one that holds the request until a message arrives is asked again at once).
    pub poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), quiet: Duration::from_secs(1), poll: Duration::from_millis(200) }
    }
}

/// One message of the bot, as it arrives.
#[derive(Clone, Debug)]
pub enum Arrival {
    /// Part `part` (from 1) of the reply to the message being waited for.
    Reply { message: SandboxMessage, part: usize },
    /// Part `part` of the reply to the earlier message `to`, which came after
    /// that message's wait ended.
    Late { message: SandboxMessage, part: usize, to: String },
    /// With live cards ([`LarkUser::set_live_cards`]): part `part`, a card
    /// already given as a `Reply` while it streamed, changed; `previous` is the
    /// text it had. `message.streaming` is false once it is complete.
    Update { message: SandboxMessage, part: usize, previous: String },
}

/// What the bot answered to one message.
#[derive(Clone, Debug, Default)]
pub struct Replies {
    /// The replies to the message, in the order Lark received them (the parts of a split answer).
    pub replies: Vec<SandboxMessage>,
    /// Replies to earlier messages that came in meanwhile (after their own wait ended).
    pub late: Vec<SandboxMessage>,
}

/// The wait for the replies to one message: see [`LarkUser::next_arrival`].
#[derive(Debug)]
pub struct ReplyWait {
    message_id: String,
    chat_id: String,
    deadline: Instant,
    /// The wait for a reply; a streaming card's every change gives it anew.
    timeout: Duration,
    quiet: Duration,
    poll: Duration,
    /// After a card: the reply is complete unless another part comes by then.
    more_until: Option<Instant>,
    done: bool,
    /// Replies to the message seen so far.
    pub parts: usize,
}

impl ReplyWait {
    /// True once the reply is complete (or the wait gave up).
    pub fn done(&self) -> bool {
        self.done
    }
}

/// A card seen while it was still streaming.
pub(super) struct OpenCard {
    /// As last seen.
    message: SandboxMessage,
    /// Its part number in the reply it belongs to.
    part: usize,
    /// Given to the caller already (live cards): its changes come as updates.
    shown: bool,
}

/// Is `m` a reply to the message `wait` waits for?
fn belongs(m: &SandboxMessage, wait: &ReplyWait) -> bool {
    match &m.via {
        Via::Reply { message_id } => *message_id == wait.message_id,
        Via::Chat { receive_id } => *receive_id == wait.chat_id,
    }
}

/// Does this message end its reply (but for a question card)? The bridge
/// sends an answer as text only when the whole answer fits in one message; a
/// card may have more parts.
fn ends_reply(m: &SandboxMessage) -> bool {
    m.msg_type == "text"
}

/// After a text reply, how long the chat waits for a question card that may
/// follow it (at most `quiet`).
pub const TEXT_GRACE: Duration = Duration::from_millis(800);

impl LarkUser {
    /// Starts waiting for the replies to `message_id`; [`LarkUser::next_arrival`] goes on.
    pub fn wait_for(&self, message_id: &str, timing: Timing) -> ReplyWait {
        ReplyWait {
            message_id: message_id.to_owned(),
            chat_id: self.sent.get(message_id).map(|s| s.chat_id.clone()).unwrap_or_default(),
            deadline: Instant::now() + timing.timeout,
            timeout: timing.timeout,
            quiet: timing.quiet,
            poll: timing.poll,
            more_until: None,
            done: false,
            parts: 0,
        }
    }

    /// The next message of the bot for this wait, as soon as the fake Lark
    /// has it: a part of the reply, or a late reply to an earlier message.
    /// `None` once the reply is complete: [`TEXT_GRACE`] (at most `quiet`)
    /// after a text, `quiet` after the last card; or at the timeout when none came. A card that is still
    /// streaming keeps the wait open (each change gives it the whole timeout
    /// again) and is given once complete, or at once and then as updates with
    /// live cards; a card still streaming at the timeout is given as it is.
    pub async fn next_arrival(&mut self, wait: &mut ReplyWait) -> anyhow::Result<Option<Arrival>> {
        loop {
            if wait.done {
                return Ok(None);
            }
            if let Some(arrival) = self.take_arrival(Some(wait)) {
                return Ok(Some(arrival));
            }
            let streaming = self.open.values().any(|o| belongs(&o.message, wait));
            let until = match wait.more_until {
                Some(more) if !streaming => more.min(wait.deadline),
                _ => wait.deadline,
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Cards still streaming at the timeout: shown as they are, followed no further.
                let open = self.open.iter().find(|(_, o)| belongs(&o.message, wait)).map(|(index, _)| *index);
                if let Some(open) = open.and_then(|index| self.open.remove(&index)) {
                    if !open.shown {
                        return Ok(Some(Arrival::Reply { message: open.message, part: open.part }));
                    }
                    continue;
                }
                wait.done = true;
                return Ok(None);
            }
            let asked = Instant::now();
            if self.page(left.min(LONG_POLL)).await? == 0 && asked.elapsed() < wait.poll {
                // A fake Lark that does not hold requests: do not ask in a tight loop.
                tokio::time::sleep(wait.poll.min(left)).await;
            }
        }
    }

    /// Waits for the replies to `message_id` and returns them all at once:
    /// see [`LarkUser::next_arrival`] for when the wait ends.
    pub async fn wait_for_replies(&mut self, message_id: &str, timing: Timing) -> anyhow::Result<Replies> {
        let mut wait = self.wait_for(message_id, timing);
        let mut replies = Replies::default();
        while let Some(arrival) = self.next_arrival(&mut wait).await? {
            match arrival {
                Arrival::Reply { message, .. } => replies.replies.push(message),
                Arrival::Late { message, .. } => replies.late.push(message),
                Arrival::Update { message, .. } => {
                    if let Some(reply) = replies.replies.iter_mut().rev().find(|r| r.index == message.index) {
                        *reply = message;
                    }
                }
            }
        }
        Ok(replies)
    }

    /// Replies to earlier messages that arrived since the last look (a card
    /// once it is complete).
    pub async fn late_replies(&mut self) -> anyhow::Result<Vec<Arrival>> {
        self.page(Duration::ZERO).await?;
        let mut arrivals = Vec::new();
        while let Some(arrival) = self.take_arrival(None) {
            arrivals.push(arrival);
        }
        Ok(arrivals)
    }

    /// The next arrival among what was fetched, for `wait` (or, without one,
    /// late replies only); `None` when what was fetched gives none.
    fn take_arrival(&mut self, mut wait: Option<&mut ReplyWait>) -> Option<Arrival> {
        while let Some(m) = self.changes.pop_front() {
            let Some(open) = self.open.get_mut(&m.index) else { continue };
            let previous = std::mem::replace(&mut open.message, m.clone());
            let (part, shown, complete) = (open.part, open.shown, !m.streaming);
            if complete {
                self.open.remove(&m.index);
            }
            if let Some(wait) = wait.as_deref_mut().filter(|w| belongs(&m, w)) {
                wait.deadline = wait.deadline.max(Instant::now() + wait.timeout);
                if complete && !self.open.values().any(|o| belongs(&o.message, wait)) {
                    wait.more_until = Some(Instant::now() + wait.quiet);
                }
                if complete && !shown {
                    return Some(Arrival::Reply { message: m, part });
                }
            } else if complete && !shown {
                if let Via::Reply { message_id } = &m.via {
                    let to = message_id.clone();
                    return Some(Arrival::Late { message: m, part, to });
                }
            }
            if shown && (complete || m.text != previous.text) {
                return Some(Arrival::Update { message: m, part, previous: previous.text });
            }
        }
        while let Some(m) = self.pending.pop_front() {
            if let Some(wait) = wait.as_deref_mut().filter(|w| belongs(&m, w)) {
                wait.parts += 1;
                let part = self.count_part(&wait.message_id);
                if m.streaming {
                    wait.more_until = None;
                    let shown = self.live_cards;
                    self.open.insert(m.index, OpenCard { message: m.clone(), part, shown });
                    if shown {
                        return Some(Arrival::Reply { message: m, part });
                    }
                    continue;
                }
                let more = if ends_reply(&m) { wait.quiet.min(TEXT_GRACE) } else { wait.quiet };
                if more.is_zero() {
                    wait.done = true;
                } else {
                    wait.more_until = Some(Instant::now() + more);
                }
                return Some(Arrival::Reply { message: m, part });
            }
            // A late reply, when it answers a message this user sent.
            let Via::Reply { message_id } = &m.via else { continue };
            if !self.sent.contains_key(message_id) {
                continue;
            }
            let to = message_id.clone();
            let part = self.count_part(&to);
            if m.streaming {
                self.open.insert(m.index, OpenCard { message: m, part, shown: false });
                continue;
            }
            return Some(Arrival::Late { message: m, part, to });
        }
        None
    }

    /// Counts one more part of the reply to `message_id`; its number.
    fn count_part(&mut self, message_id: &str) -> usize {
        self.sent.get_mut(message_id).map_or(1, |s| {
            s.parts_seen += 1;
            s.parts_seen
        })
    }

    /// Fetches what came since the last look into `pending`, waiting up to
    /// `wait` for something to come; how many came.
    async fn page(&mut self, wait: Duration) -> anyhow::Result<usize> {
        let page = self.fetch(self.cursor, wait).await.with_context(|| {
            format!("lost the fake Lark at {}: is deploy/run-local still running?", self.target.lark)
        })?;
        self.cursor = page.next;
        self.stamp = self.stamp.max(page.stamp);
        let count = page.messages.len() + page.changed.len();
        self.pending.extend(page.messages);
        self.changes.extend(page.changed);
        Ok(count)
    }

    pub(super) async fn fetch(&self, after: usize, wait: Duration) -> reqwest::Result<SandboxPage> {
        let (lark, wait, stamp) = (&self.target.lark, wait.as_millis(), self.stamp);
        let url = format!("{lark}/_sandbox/messages?after={after}&wait_ms={wait}&changes_since={stamp}");
        self.http.get(url).send().await?.error_for_status()?.json().await
    }
}
