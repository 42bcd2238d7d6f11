//! CardKit: the card entity API that streams an answer into one card
//! (scope `cardkit:card:write`; ARCHITECTURE.md, "Streaming answers").
//!
//! A card is created once (`POST /cardkit/v1/cards`), sent as a message by
//! its `card_id`, then changed with operations that each carry a `sequence`
//! rising strictly across every operation on that card. Lark allows 10
//! operations per second on one card, and closes streaming mode by itself 10
//! minutes after it was turned on: then only a full card update works.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api::{LarkClient, LarkError};
use super::calls::LarkApi;
use super::errors::ErrorClass;
use super::ids::path_segment as segment;

/// Each CardKit API's limits per app (per second, per minute), from each
/// API's page ("接口频率限制": create a card, update an element's text,
/// change settings, replace a card: 1000 次/分钟、50 次/秒). Past them Lark
/// answers HTTP 429, code 99991400, with `x-ogw-ratelimit-reset`.
pub const CARDKIT_LIMITS: (u32, u32) = (50, 1000);

/// A sequence not above the card's last one (another operation went first).
pub const SEQUENCE_TAKEN: i64 = 300317;
/// Streaming mode has closed (the 10-minute window): first 200850, then 300309.
pub const STREAMING_CLOSED: [i64; 2] = [200850, 300309];
/// A card message whose card could not be built or found.
pub const CARD_CONTENT_FAILED: i64 = 230099;

/// What a failed card operation means for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardFailure {
    /// Another operation took a later sequence: this one is outdated.
    SequenceTaken,
    /// Streaming mode has closed: finish with a full card update.
    StreamingClosed,
    /// Worth trying again.
    Transient,
    /// CardKit cannot be used for this answer (scope, card error): send the
    /// answer as a whole instead.
    Refused,
}

impl CardFailure {
    pub fn of(e: &LarkError) -> Self {
        match e {
            LarkError::Api { code: Some(SEQUENCE_TAKEN), .. } => Self::SequenceTaken,
            LarkError::Api { code: Some(c), .. } if STREAMING_CLOSED.contains(c) => Self::StreamingClosed,
            other => match other.class() {
                ErrorClass::Transient { .. } | ErrorClass::TokenInvalid => Self::Transient,
                ErrorClass::Permanent { .. } => Self::Refused,
            },
        }
    }
}

/// What an operator does when CardKit refuses.
pub const CARDKIT_FIX: &str =
    "grant the app the scope cardkit:card:write (Permissions & Scopes, \"Create and update cards\") \
     and publish a new version, or set the channel's streaming = false";

#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    card_id: String,
}

impl LarkClient {
    /// Creates a card entity from card JSON 2.0; returns its `card_id`.
    pub async fn create_card(&self, card_json: &str) -> Result<String, LarkError> {
        let body = json!({ "type": "card_json", "data": card_json });
        let env = self.call(LarkApi::CardCreate, Method::POST, "cardkit/v1/cards", Some(&body)).await?;
        let created: Created = Self::data(env)?;
        if created.card_id.is_empty() {
            return Err(LarkError::Api {
                http_status: 200,
                code: Some(0),
                msg: "no card_id in Lark's answer".into(),
                retry_after: None,
            });
        }
        Ok(created.card_id)
    }

    /// Sets the whole text of one markdown element (streaming mode shows the
    /// difference as typing).
    pub async fn set_card_text(
        &self,
        card_id: &str,
        element_id: &str,
        text: &str,
        sequence: u64,
    ) -> Result<(), LarkError> {
        let path = format!(
            "cardkit/v1/cards/{}/elements/{}/content",
            segment("card_id", card_id)?,
            segment("element_id", element_id)?
        );
        let body = json!({ "content": text, "sequence": sequence, "uuid": format!("s{sequence}-{card_id}") });
        self.call(LarkApi::CardElementContent, Method::PUT, &path, Some(&body)).await.map(|_| ())
    }

    /// Turns streaming mode off (the card is final, its buttons clickable)
    /// and sets what the chat list shows for it.
    pub async fn close_streaming(&self, card_id: &str, summary: &str, sequence: u64) -> Result<(), LarkError> {
        let path = format!("cardkit/v1/cards/{}/settings", segment("card_id", card_id)?);
        let settings = json!({ "config": { "streaming_mode": false, "summary": { "content": summary } } }).to_string();
        let body = json!({ "settings": settings, "sequence": sequence, "uuid": format!("c{sequence}-{card_id}") });
        self.call(LarkApi::CardSettings, Method::PATCH, &path, Some(&body)).await.map(|_| ())
    }

    /// Replaces the whole card (works after streaming mode has closed).
    pub async fn replace_card(&self, card_id: &str, card_json: &str, sequence: u64) -> Result<(), LarkError> {
        let path = format!("cardkit/v1/cards/{}", segment("card_id", card_id)?);
        let body = json!({
            "card": { "type": "card_json", "data": card_json },
            "sequence": sequence,
            "uuid": format!("r{sequence}-{card_id}"),
        });
        self.call(LarkApi::CardUpdate, Method::PUT, &path, Some(&body)).await.map(|_| ())
    }
}

/// The content of a message that shows card `card_id`.
pub fn card_message_content(card_id: &str) -> String {
    json!({ "type": "card", "data": { "card_id": card_id } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64) -> LarkError {
        LarkError::Api { http_status: 400, code: Some(code), msg: String::new(), retry_after: None }
    }

    #[test]
    fn failures_by_code() {
        assert_eq!(CardFailure::of(&api(300317)), CardFailure::SequenceTaken);
        assert_eq!(CardFailure::of(&api(200850)), CardFailure::StreamingClosed);
        assert_eq!(CardFailure::of(&api(300309)), CardFailure::StreamingClosed);
        assert_eq!(CardFailure::of(&api(99991672)), CardFailure::Refused);
        assert_eq!(CardFailure::of(&api(230099)), CardFailure::Refused);
        assert_eq!(CardFailure::of(&api(99991400)), CardFailure::Transient);
        assert_eq!(CardFailure::of(&LarkError::Network("x".into())), CardFailure::Transient);
    }

    #[test]
    fn a_card_message_names_the_card() {
        assert_eq!(card_message_content("7355"), r#"{"data":{"card_id":"7355"},"type":"card"}"#);
    }
}
