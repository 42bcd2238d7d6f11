//! Names of the metrics that dashboards and alert rules read: written here
//! once, so a rename cannot miss one of its readers in the code.

/// Counter `{app, api, outcome}`: Lark Open API calls, one per HTTP request.
pub const LARK_API_CALLS: &str = "lark_bridge_lark_api_calls_total";
/// Gauge `{app}`: the app's Lark calls this calendar month (UTC), all replicas.
pub const LARK_CALLS_MONTH: &str = "lark_bridge_lark_calls_month";
/// Gauge `{app}`: `channels[].lark_calls_per_month`, when set.
pub const LARK_CALLS_BUDGET: &str = "lark_bridge_lark_calls_budget";
/// Counter `{channel, op, code}`: CardKit operations of streamed answers.
pub const CARD_OPERATIONS: &str = "lark_bridge_card_operations_total";
/// Histogram `{channel}`: FastGPT's first words to the card shown, seconds.
pub const STREAM_FIRST_TEXT: &str = "lark_bridge_stream_first_text_seconds";
/// Gauge `{app}`: streamed answers whose card this replica is updating.
pub const STREAMING_CARDS: &str = "lark_bridge_streaming_cards";
/// Counter `{app, api}`: waits for Lark's rate-limit reset after a 99991400.
pub const LARK_RATE_LIMIT_WAITS: &str = "lark_bridge_lark_rate_limit_waits_total";
