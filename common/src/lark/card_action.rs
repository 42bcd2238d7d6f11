//! `card.action.trigger`: a click on a card's button, or a form submitted
//! (schema 2.0 callback; `testdata/lark-samples/card_action_trigger.json`).
//!
//! It comes the way events come (the Request URL, encrypted and signed, or
//! a long-connection frame), but Lark never sends it again and waits 3 s for
//! an answer that may carry a toast and a new card.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::event::EventEnvelope;

pub const CARD_ACTION: &str = "card.action.trigger";

/// The parts of a card action the bridge reads.
#[derive(Debug, Clone, Deserialize)]
pub struct CardAction {
    pub operator: Operator,
    pub action: Action,
    #[serde(default)]
    pub context: Context,
}

/// Who clicked. `user_id` is absent over the long connection and `null` or
/// `""` without the user-id scope, so the bridge reads the open_id only; an
/// empty one is no id (`None`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Operator {
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub open_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Action {
    /// The `value` of the button's callback behaviour, as the card set it.
    #[serde(default)]
    pub value: Value,
    /// A submitted form: component name → value.
    #[serde(default)]
    pub form_value: Option<Map<String, Value>>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Where the card is.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Context {
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub open_message_id: Option<String>,
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub open_chat_id: Option<String>,
}

impl CardAction {
    /// The card action of `envelope`; `None` for other event types.
    pub fn of(envelope: &EventEnvelope) -> Option<Result<Self, serde_json::Error>> {
        (envelope.header.event_type == CARD_ACTION)
            .then(|| serde_json::from_str(envelope.event.as_deref().map_or("null", serde_json::value::RawValue::get)))
    }

    /// Checks the ids the bridge uses (they go into keys, paths and logs).
    pub fn check_ids(&self) -> Result<(), super::ids::IdError> {
        use super::ids::check_opt;
        check_opt("event.operator.open_id", self.operator.open_id.as_deref())?;
        check_opt("event.context.open_message_id", self.context.open_message_id.as_deref())?;
        check_opt("event.context.open_chat_id", self.context.open_chat_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_larks_sample() {
        let path = format!("{}/../testdata/lark-samples/card_action_trigger.json", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(path).expect("the sample");
        let envelope: EventEnvelope = serde_json::from_slice(&bytes).expect("an envelope");
        let action = CardAction::of(&envelope).expect("a card action").expect("its shape");
        assert_eq!(action.operator.open_id.as_deref(), Some("ou_3c14f3a59eaf2825dbe25359f15*****"));
        assert_eq!(action.action.value["key"], "value");
        assert_eq!(action.action.form_value.as_ref().map(Map::len), Some(8));
        assert_eq!(action.context.open_message_id.as_deref(), Some("om_574d639e4a44e4dd646eaf628e2*****"));
        assert!(action.check_ids().is_err(), "the sample's masked ids are not Lark's shape");
    }

    #[test]
    fn empty_optional_ids_are_absent() {
        let envelope: EventEnvelope = serde_json::from_value(serde_json::json!({
            "schema": "2.0",
            "header": { "event_id": "e1", "event_type": CARD_ACTION, "token": "", "app_id": "cli_a" },
            "event": {
                "operator": { "open_id": "ou_1", "user_id": null, "union_id": "" },
                "action": { "value": { "k": "v" }, "tag": "button" },
                "context": { "open_message_id": "om_1", "open_chat_id": "" }
            }
        }))
        .expect("an envelope");
        let action = CardAction::of(&envelope).expect("a card action").expect("its shape");
        assert_eq!(action.context.open_chat_id, None);
        assert_eq!(action.check_ids(), Ok(()));
    }
}
