//! What the fake Lark recorded during the timed rounds of `loadgen stream`:
//! the CardKit operations on each answer's card, every call the bridge made
//! and which of them Lark refused, the distinct texts an answer showed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use lark_bridge_tests::fake_lark::FakeLark;

use crate::report::list_or_none;

/// The CardKit operations on the cards of a run.
#[derive(Default)]
pub(super) struct CardOps {
    pub(super) cards: usize,
    pub(super) ops: usize,
    pub(super) by_kind: BTreeMap<String, usize>,
    /// The most operations on one card within any one second.
    pub(super) max_per_second: usize,
    /// Operations ÷ seconds from each card's first operation to its last
    /// (at least 1 s), over all cards.
    pub(super) mean_per_second: f64,
    pub(super) rate_limited: usize,
    pub(super) other_errors: usize,
    /// Lark's code of each refused operation (HTTP 429 included), and how many.
    error_codes: BTreeMap<i64, usize>,
}

impl CardOps {
    pub(super) fn codes_line(&self) -> String {
        let codes: Vec<String> = self.error_codes.iter().map(|(code, n)| format!("{code}:{n}")).collect();
        list_or_none(&codes, ",")
    }
}

/// The most of `sorted` (instants, in order) within any one second.
fn busiest_second(sorted: &[Instant]) -> usize {
    let mut start = 0;
    let mut most = 0;
    for (end, at) in sorted.iter().enumerate() {
        while at.duration_since(sorted[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

pub(super) fn card_ops(lark: &FakeLark, card_ids: &HashSet<String>) -> CardOps {
    let mut times: HashMap<&str, Vec<Instant>> = HashMap::new();
    let all = lark.card_operations();
    let mut out = CardOps { cards: card_ids.len(), ..CardOps::default() };
    for op in all.iter().filter(|op| card_ids.contains(&op.card_id)) {
        times.entry(op.card_id.as_str()).or_default().push(op.at);
        *out.by_kind.entry(format!("{:?}", op.kind).to_lowercase()).or_default() += 1;
        out.ops += 1;
        if op.http_status == 429 {
            out.rate_limited += 1;
        } else if op.code != 0 {
            out.other_errors += 1;
        }
        if op.http_status == 429 || op.code != 0 {
            *out.error_codes.entry(op.code).or_default() += 1;
        }
    }
    let mut seconds = 0.0;
    for t in times.values_mut() {
        t.sort();
        out.max_per_second = out.max_per_second.max(busiest_second(t));
        if let (Some(first), Some(last)) = (t.first(), t.last()) {
            seconds += last.duration_since(*first).as_secs_f64().max(1.0);
        }
    }
    if seconds > 0.0 {
        out.mean_per_second = out.ops as f64 / seconds;
    }
    out
}

/// The distinct texts an answer's message showed, in order (a text shown
/// again right after itself counts once; an empty one not at all).
pub(super) fn distinct_texts(history: &[(Instant, String)]) -> usize {
    let mut last: Option<&str> = None;
    let mut n = 0;
    for (_, text) in history {
        let text = text.trim();
        if !text.is_empty() && last != Some(text) {
            n += 1;
            last = Some(text);
        }
    }
    n
}

/// Every request the fake Lark received in a time window, whatever the
/// endpoint (messages, reactions, CardKit, tokens, bot info).
#[derive(Default)]
pub(super) struct LarkCalls {
    pub(super) total: usize,
    by_api: BTreeMap<String, usize>,
    /// Refused as over a rate limit (HTTP 429 or code 99991400).
    pub(super) rate_limited: usize,
    /// Of those, CardKit's.
    pub(super) cardkit_rate_limited: usize,
}

impl LarkCalls {
    pub(super) fn by_api_line(&self) -> String {
        let parts: Vec<String> = self.by_api.iter().map(|(api, n)| format!("{api}:{n}")).collect();
        list_or_none(&parts, ",")
    }
}

pub(super) fn lark_calls(lark: &FakeLark, from: Instant, to: Instant) -> LarkCalls {
    use lark_bridge_tests::fake_lark::Endpoint;
    let mut out = LarkCalls::default();
    for a in lark.all_attempts().iter().filter(|a| a.received_at >= from && a.received_at <= to) {
        out.total += 1;
        *out.by_api.entry(format!("{:?}", a.endpoint)).or_default() += 1;
        if a.http_status == 429 || a.code == 99991400 {
            out.rate_limited += 1;
            if matches!(
                a.endpoint,
                Endpoint::CardCreate | Endpoint::CardContent | Endpoint::CardSettings | Endpoint::CardUpdate
            ) {
                out.cardkit_rate_limited += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(busiest_second(&[]), 0);
        assert_eq!(busiest_second(&[at(0)]), 1);
        assert_eq!(busiest_second(&[at(0), at(999), at(1000), at(1001)]), 3);
        let steady: Vec<Instant> = (0..40).map(|i| at(i * 300)).collect();
        assert_eq!(busiest_second(&steady), 4);
    }
}
