//! Lark's API error codes and what each means for the bridge: retry, fetch a
//! new token, or give up and tell the operator what to fix in the Lark console.
//!
//! Lark reports most errors as HTTP 400 with a non-zero `code` in the body;
//! always read the code, never only the status.

use std::time::Duration;

/// What to do about a failed Lark call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later (after `retry_after` when Lark said so).
    Transient { retry_after: Option<Duration> },
    /// The tenant token is invalid or expired: fetch a new one and retry now.
    TokenInvalid,
    /// Will not succeed by retrying; `fix` says what to change.
    Permanent { fix: &'static str },
}

/// Codes that mean "the app lacks a scope" (its name is in the message).
pub const MISSING_SCOPE: [i64; 2] = [99991672, 99991679];

/// The message replied to was withdrawn (230011) or deleted (231003): the
/// answer can still go into the chat.
pub const WITHDRAWN: [i64; 2] = [230011, 231003];

/// Over one of Lark's rate limits (with HTTP 429 and `x-ogw-ratelimit-reset`).
pub const RATE_LIMITED: i64 = 99991400;

/// Codes that mean "this token is no longer good".
pub const TOKEN_INVALID_CODES: [i64; 4] = [99991661, 99991663, 99991664, 99991668];

/// Classifies a Lark API answer by its body code first, then its HTTP status.
pub fn classify(http_status: u16, code: Option<i64>, retry_after: Option<Duration>) -> ErrorClass {
    use ErrorClass::*;
    match code {
        Some(c) if TOKEN_INVALID_CODES.contains(&c) => TokenInvalid,
        Some(RATE_LIMITED) => Transient { retry_after },
        Some(230020) => Transient { retry_after: retry_after.or(Some(Duration::from_secs(1))) },
        Some(230002) => Permanent {
            fix: "the bot is not in this chat: add the bot to the group, or check that the chat still exists",
        },
        Some(230006) => Permanent {
            fix: "the app's Bot capability is off: enable it under Features > Bot in the Lark developer console and publish a new version",
        },
        Some(230013) => Permanent {
            fix: "the user is outside the app's availability: widen the availability range in the Lark console (Version Management & Release)",
        },
        Some(230027) | Some(99991672) | Some(99991679) => Permanent {
            fix: "the bot is missing a permission: grant it under Permissions & Scopes (for replies: im:message:send_as_bot, \"Send messages as the app\") and publish a new version. If there is a record but Lark does not respond, the bot is missing the required permissions",
        },
        Some(c) if WITHDRAWN.contains(&c) => Permanent {
            fix: "the message was withdrawn or deleted: nothing to reply to",
        },
        Some(230025) => Permanent { fix: "the message is too long for Lark: it must be split (a bug in the bridge's renderer)" },
        Some(10003) | Some(10014) => Permanent {
            fix: "Lark refused the app credentials: set channels[].app_id and app_secret to the App ID and App Secret shown under Credentials & Basic Info",
        },
        _ if http_status == 429 => Transient { retry_after },
        _ if http_status >= 500 => Transient { retry_after },
        _ => Permanent {
            fix: "Lark refused the request: look the code up in Lark's error code list (open.feishu.cn/document/server-docs/api-call-guide/generic-error-code)",
        },
    }
}

/// Reads `x-ogw-ratelimit-reset` (seconds until the limit resets).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("x-ogw-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(400, Some(99991663), None), ErrorClass::TokenInvalid);
        assert_eq!(classify(400, Some(99991661), None), ErrorClass::TokenInvalid);
        assert_eq!(
            classify(429, Some(99991400), Some(Duration::from_secs(2))),
            ErrorClass::Transient { retry_after: Some(Duration::from_secs(2)) }
        );
        assert!(matches!(classify(400, Some(230020), None), ErrorClass::Transient { .. }));
        assert!(matches!(classify(502, None, None), ErrorClass::Transient { .. }));
        assert!(matches!(classify(500, Some(1), None), ErrorClass::Transient { .. }));
        for code in [230002, 230006, 230013, 230027, 99991672, 230011, 231003, 10014] {
            assert!(matches!(classify(400, Some(code), None), ErrorClass::Permanent { .. }), "{code}");
        }
        let ErrorClass::Permanent { fix } = classify(400, Some(230027), None) else { panic!() };
        assert!(fix.contains("im:message:send_as_bot"));
    }

    #[test]
    fn reads_the_rate_limit_header() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-ogw-ratelimit-reset", "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("x-ogw-ratelimit-reset", "soon".parse().expect("header"));
        assert_eq!(retry_after(&h), None);
    }
}
