//! Every Lark Open API call the bridge makes, counted: per app, per API and
//! by outcome in the metrics (`lark_bridge_lark_api_calls_total`), and per
//! app and calendar month durably in the `{ns}_status` bucket, so the count
//! survives restarts and adds up across replicas and services.
//!
//! Why count: a free (Basic) Feishu tenant gets 10,000 API calls a month for
//! all its custom apps, and Lark limits each API per app. An operator needs
//! to see where the calls go, and a channel with `lark_calls_per_month` set
//! stops streaming (which costs the most calls) once 90 % of its budget is
//! spent ([`MonthUsage::streaming_allowed`]).
//!
//! The hot path only adds to an atomic; [`flush`] (run every few seconds by
//! each service, see [`spawn_flusher`]) adds what was counted to the month's
//! key with a compare-and-set. A crash loses at most one interval's calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metric_names::{LARK_API_CALLS, LARK_CALLS_BUDGET, LARK_CALLS_MONTH};
use crate::topology::keys;

/// One Lark Open API, as counted. The label is stable: dashboards and alert
/// rules use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LarkApi {
    TenantToken,
    BotInfo,
    MessageReply,
    MessageCreate,
    ReactionCreate,
    ReactionDelete,
    MessageResource,
    CardCreate,
    CardElementContent,
    CardSettings,
    CardUpdate,
}

impl LarkApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantToken => "auth.tenant_access_token",
            Self::BotInfo => "bot.info",
            Self::MessageReply => "im.message.reply",
            Self::MessageCreate => "im.message.create",
            Self::ReactionCreate => "im.message.reaction.create",
            Self::ReactionDelete => "im.message.reaction.delete",
            Self::MessageResource => "im.message.resource.get",
            Self::CardCreate => "cardkit.card.create",
            Self::CardElementContent => "cardkit.card.element.content",
            Self::CardSettings => "cardkit.card.settings",
            Self::CardUpdate => "cardkit.card.update",
        }
    }
}

/// How a call ended, for the metric's `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    /// HTTP 429 or code 99991400: over one of Lark's rate limits.
    RateLimited,
    /// Any other refusal by Lark.
    Refused,
    /// No answer (network, timeout).
    Network,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::RateLimited => "rate_limited",
            Self::Refused => "refused",
            Self::Network => "network",
        }
    }

    /// The outcome of an answer with this HTTP status and Lark code.
    pub fn of(http_status: u16, code: Option<i64>) -> Self {
        match (http_status, code) {
            (429, _) | (_, Some(super::errors::RATE_LIMITED)) => Self::RateLimited,
            (200..=299, None | Some(0)) => Self::Ok,
            _ => Self::Refused,
        }
    }
}

/// The calls one app made that are not in the durable count yet.
#[derive(Debug, Default)]
pub struct CallCounter {
    unflushed: AtomicU64,
}

impl CallCounter {
    /// Counts one call of `app` to `api`.
    pub fn count(&self, app: &str, api: LarkApi, outcome: CallOutcome) {
        // Every request counts against the month, whatever Lark answered.
        self.unflushed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(LARK_API_CALLS, "app" => app.to_owned(), "api" => api.as_str(), "outcome" => outcome.as_str())
            .increment(1);
    }

    fn take(&self) -> u64 {
        self.unflushed.swap(0, Ordering::Relaxed)
    }

    fn give_back(&self, n: u64) {
        self.unflushed.fetch_add(n, Ordering::Relaxed);
    }
}

/// The calendar month (UTC) a call counts in, as `YYYY-MM`.
pub fn month_of(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// One app's calls this month, and its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthUsage {
    pub month: String,
    pub calls: u64,
    /// `channels[].lark_calls_per_month`, when set.
    pub budget: Option<u64>,
}

/// From this share of the budget on, answers go whole instead of streaming.
pub const STREAMING_STOPS_AT: f64 = 0.9;

impl MonthUsage {
    /// Streaming spends the most calls: past [`STREAMING_STOPS_AT`] of the
    /// budget answers go whole, so the budget lasts the month.
    pub fn streaming_allowed(&self) -> bool {
        match self.budget {
            Some(b) => (self.calls as f64) < (b as f64) * STREAMING_STOPS_AT,
            None => true,
        }
    }

    /// The budget is spent: Lark may refuse further calls (the bridge still
    /// makes them; Lark decides).
    pub fn spent(&self) -> bool {
        self.budget.is_some_and(|b| self.calls >= b)
    }

    /// What `/status` says about it, in words.
    pub fn state(&self) -> &'static str {
        if self.spent() {
            "budget spent: Lark may refuse calls until the month ends; raise lark_calls_per_month or the tenant's plan"
        } else if !self.streaming_allowed() {
            "over 90 % of the budget: answers are sent whole (no streaming) until the month ends"
        } else {
            "within budget"
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the Lark call count in the status bucket: {0}")]
pub struct UsageError(String);

/// The durable count of `app_id` in `month` (0 when nothing was counted).
pub async fn read(store: &kv::Store, app_id: &str, month: &str) -> Result<u64, UsageError> {
    Ok(read_at(store, &keys::lark_calls(app_id, month)).await?.map_or(0, |(n, _)| n))
}

async fn read_at(store: &kv::Store, key: &str) -> Result<Option<(u64, u64)>, UsageError> {
    let entry = store.entry(key).await.map_err(|e| UsageError(e.to_string()))?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
    let n = std::str::from_utf8(&entry.value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| UsageError(format!("key {key} holds no count")))?;
    Ok(Some((n, entry.revision)))
}

/// Adds `n` calls to the month's count of `app_id`: the new total.
pub async fn add(store: &kv::Store, app_id: &str, month: &str, n: u64) -> Result<u64, UsageError> {
    let key = keys::lark_calls(app_id, month);
    // Replicas flush at once now and then: a few tries win.
    for _ in 0..8 {
        let written = match read_at(store, &key).await? {
            Some((now, revision)) => {
                let total = now.saturating_add(n);
                store
                    .update(&key, total.to_string().into(), revision)
                    .await
                    .map(|_| total)
                    .map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, UsageError(e.to_string())))
            }
            None => store
                .create(&key, n.to_string().into())
                .await
                .map(|_| n)
                .map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, UsageError(e.to_string()))),
        };
        match written {
            Ok(total) => return Ok(total),
            Err((true, _)) => continue,
            Err((false, e)) => return Err(e),
        }
    }
    Err(UsageError(format!("key {key} keeps changing under this replica")))
}

/// One app's counter and budget, for the flusher.
pub struct Counted {
    pub app_id: String,
    pub counter: Arc<CallCounter>,
    pub budget: Option<u64>,
}

/// How often each service adds its calls to the durable count.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Adds what each app counted to its month's key; the totals go to the
/// gauges `lark_bridge_lark_calls_month{app}` (and the budget to
/// `lark_bridge_lark_calls_budget{app}`) for the alert rules.
pub async fn flush(store: &kv::Store, apps: &[Counted]) {
    let month = month_of(std::time::SystemTime::now());
    for app in apps {
        let n = app.counter.take();
        if n == 0 {
            continue;
        }
        match add(store, &app.app_id, &month, n).await {
            Ok(total) => {
                metrics::gauge!(LARK_CALLS_MONTH, "app" => app.app_id.clone()).set(total as f64);
            }
            Err(e) => {
                app.counter.give_back(n);
                tracing::warn!(error = %e, app = %app.app_id, "cannot add to the month's Lark call count; trying again later");
            }
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until `shutdown`, then once more.
pub fn spawn_flusher(store: kv::Store, apps: Vec<Counted>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    for app in &apps {
        if let Some(b) = app.budget {
            metrics::gauge!(LARK_CALLS_BUDGET, "app" => app.app_id.clone()).set(b as f64);
        }
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => flush(&store, &apps).await,
                _ = shutdown.cancelled() => break,
            }
        }
        flush(&store, &apps).await;
    })
}

/// The month's usage of each app, read from the bucket at most every
/// [`USAGE_FRESH_FOR`]: the relay asks before each streamed answer.
pub struct UsageCache {
    store: kv::Store,
    cache: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

/// How long a read of the month's count is used before it is read again.
pub const USAGE_FRESH_FOR: Duration = Duration::from_secs(10);

impl UsageCache {
    pub fn new(store: kv::Store) -> Self {
        Self { store, cache: Default::default() }
    }

    /// This month's usage of `app_id` against `budget`. Without a budget
    /// nothing is read. A bucket that does not answer counts as the last
    /// figure read (or none): a NATS hiccup does not stop streaming.
    pub async fn usage(&self, app_id: &str, budget: Option<u64>) -> MonthUsage {
        let month = month_of(std::time::SystemTime::now());
        let Some(budget) = budget else { return MonthUsage { month, calls: 0, budget: None } };
        let key = format!("{app_id}.{month}");
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.get(&key).copied()
        };
        let calls = match cached {
            Some((at, calls)) if at.elapsed() < USAGE_FRESH_FOR => calls,
            _ => {
                let calls = match read(&self.store, app_id, &month).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the month's Lark call count");
                        cached.map_or(0, |(_, n)| n)
                    }
                };
                let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                cache.retain(|k, _| k.ends_with(&month));
                cache.insert(key, (std::time::Instant::now(), calls));
                calls
            }
        };
        MonthUsage { month, calls, budget: Some(budget) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_by_status_and_code() {
        assert_eq!(CallOutcome::of(200, Some(0)), CallOutcome::Ok);
        assert_eq!(CallOutcome::of(200, None), CallOutcome::Ok);
        assert_eq!(CallOutcome::of(429, None), CallOutcome::RateLimited);
        assert_eq!(CallOutcome::of(400, Some(99991400)), CallOutcome::RateLimited);
        assert_eq!(CallOutcome::of(400, Some(230020)), CallOutcome::Refused);
        assert_eq!(CallOutcome::of(200, Some(99991672)), CallOutcome::Refused);
    }

    #[test]
    fn the_month_is_utc_year_and_month() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_764_979_200); // 2025-12-06
        assert_eq!(month_of(t), "2025-12");
    }

    #[test]
    fn streaming_stops_at_ninety_percent_and_the_budget_is_spent_at_its_end() {
        let at = |calls| MonthUsage { month: "2026-12".into(), calls, budget: Some(10_000) };
        assert!(at(8_999).streaming_allowed());
        assert!(!at(9_000).streaming_allowed());
        assert!(!at(9_000).spent());
        assert!(at(10_000).spent());
        assert!(MonthUsage { month: "2026-12".into(), calls: u64::MAX, budget: None }.streaming_allowed());
        assert!(at(9_500).state().contains("whole"));
    }
}
