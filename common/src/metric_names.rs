//! Names of every metric the services record (dashboards and alert rules
//! read them): written here once, so a rename cannot miss one of its
//! readers in the code. Each says its kind, its labels and who records it.

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

// The rest, by name.

/// Gauge `{worker}` (common).
pub const CONSUMER_PENDING: &str = "lark_bridge_consumer_pending";
/// Counter `{channel, stage}` (common).
pub const DEAD_LETTERS_TOTAL: &str = "lark_bridge_dead_letters_total";
/// Counter `{channel}` (relay).
pub const FASTGPT_DUPLICATES_TOTAL: &str = "lark_bridge_fastgpt_duplicates_total";
/// Counter `{channel}` (relay).
pub const FASTGPT_RETRIES_TOTAL: &str = "lark_bridge_fastgpt_retries_total";
/// Histogram `{channel, outcome}` (relay).
pub const FASTGPT_SECONDS: &str = "lark_bridge_fastgpt_seconds";
/// Gauge `{worker}` (common).
pub const IN_FLIGHT: &str = "lark_bridge_in_flight";
/// Counter `{channel, event_type}` (ingress).
pub const INGRESS_ACCEPTED_TOTAL: &str = "lark_bridge_ingress_accepted_total";
/// Counter `{channel, outcome}` (ingress).
pub const INGRESS_CLICKS_TOTAL: &str = "lark_bridge_ingress_clicks_total";
/// Counter `{channel}` (ingress).
pub const INGRESS_DUPLICATES_TOTAL: &str = "lark_bridge_ingress_duplicates_total";
/// Counter `{channel, outcome}` (ingress).
pub const INGRESS_FEEDBACK_TOTAL: &str = "lark_bridge_ingress_feedback_total";
/// Counter `{outcome}` (ingress).
pub const INGRESS_FILES_TOTAL: &str = "lark_bridge_ingress_files_total";
/// Counter `{channel, code}` (ingress).
pub const INGRESS_LONG_CONNECTION_ACKS_TOTAL: &str = "lark_bridge_ingress_long_connection_acks_total";
/// Counter `{channel, kind}` (ingress).
pub const INGRESS_LONG_CONNECTION_FRAMES_TOTAL: &str = "lark_bridge_ingress_long_connection_frames_total";
/// Counter `{channel}` (ingress).
pub const INGRESS_LONG_CONNECTION_RECONNECTS_TOTAL: &str = "lark_bridge_ingress_long_connection_reconnects_total";
/// Counter `{channel, reason}` (ingress).
pub const INGRESS_LONG_CONNECTION_REFUSALS_TOTAL: &str = "lark_bridge_ingress_long_connection_refusals_total";
/// Counter `{channel}` (ingress).
pub const INGRESS_LONG_CONNECTION_REPUSHES_ANSWERED_TOTAL: &str =
    "lark_bridge_ingress_long_connection_repushes_answered_total";
/// Gauge `{channel}` (ingress).
pub const INGRESS_LONG_CONNECTIONS_UP: &str = "lark_bridge_ingress_long_connections_up";
/// Histogram (ingress).
pub const INGRESS_PUBLISH_SECONDS: &str = "lark_bridge_ingress_publish_seconds";
/// Counter `{channel, reason}` (ingress).
pub const INGRESS_REJECTED_TOTAL: &str = "lark_bridge_ingress_rejected_total";
/// Counter `{channel}` (responder).
pub const LARK_RETRIES_TOTAL: &str = "lark_bridge_lark_retries_total";
/// Histogram `{channel, code}` (responder).
pub const LARK_SEND_SECONDS: &str = "lark_bridge_lark_send_seconds";
/// Counter `{channel}` (common).
pub const LARK_TOKEN_FETCHES_TOTAL: &str = "lark_bridge_lark_token_fetches_total";
/// Counter `{worker}` (common).
pub const ORPHANS_REMOVED_TOTAL: &str = "lark_bridge_orphans_removed_total";
/// Gauge `{worker}` (common).
pub const PARTITIONS_HELD: &str = "lark_bridge_partitions_held";
/// Counter `{channel}` (relay).
pub const RELAY_ANSWERS_CUT_TOTAL: &str = "lark_bridge_relay_answers_cut_total";
/// Counter `{channel, kind, outcome}` (relay).
pub const RELAY_ATTACHMENTS_TOTAL: &str = "lark_bridge_relay_attachments_total";
/// Counter `{channel, outcome}` (relay).
pub const RELAY_CLICKS_TOTAL: &str = "lark_bridge_relay_clicks_total";
/// Counter `{channel}` (relay).
pub const RELAY_DUPLICATES_TOTAL: &str = "lark_bridge_relay_duplicates_total";
/// Counter `{channel, outcome, verdict}` (relay).
pub const RELAY_FEEDBACK_TOTAL: &str = "lark_bridge_relay_feedback_total";
/// Counter `{channel, kind}` (relay).
pub const RELAY_REPLIES_TOTAL: &str = "lark_bridge_relay_replies_total";
/// Counter `{channel}` (relay).
pub const RELAY_WELCOMES_TOTAL: &str = "lark_bridge_relay_welcomes_total";
/// Counter `{channel, kind}` (responder).
pub const REPLIES_SENT_TOTAL: &str = "lark_bridge_replies_sent_total";
/// Gauge `{stream}` (common).
pub const STREAM_BYTES: &str = "lark_bridge_stream_bytes";
/// Gauge `{stream}` (common).
pub const STREAM_LIMIT_BYTES: &str = "lark_bridge_stream_limit_bytes";
/// Gauge `{stream}` (common).
pub const STREAM_MESSAGES: &str = "lark_bridge_stream_messages";
/// Gauge `{stream}` (common).
pub const STREAM_SETTINGS_DIFFER: &str = "lark_bridge_stream_settings_differ";
