//! The `card.action.trigger` callback, field by field as Lark sends it, with
//! a setter for each field a test may want to forge.

use serde_json::{json, Map, Value};

use super::CARD_ACTION_TRIGGER;
use crate::lark_events::{now_ms, random_hex};

/// The tenant of the fake's users (as in [`crate::lark_events::EventBuilder`]).
const TENANT_KEY: &str = "736588c9260f175e";

/// Builds a `card.action.trigger` callback (see the module documentation):
/// a click by default; setters for every field a test may want to forge.
#[derive(Clone, Debug)]
pub struct CardActionBuilder {
    app_id: String,
    tenant_key: String,
    token: Option<String>,
    event_id: Option<String>,
    create_time_us: Option<i64>,
    operator_open_id: String,
    user_id: Option<String>,
    union_id: Option<String>,
    action_token: Option<String>,
    value: Value,
    tag: String,
    name: Option<String>,
    form_value: Option<Map<String, Value>>,
    timezone: String,
    host: String,
    message_id: Option<String>,
    chat_id: Option<String>,
}

impl CardActionBuilder {
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            tenant_key: TENANT_KEY.to_owned(),
            token: None,
            event_id: None,
            create_time_us: None,
            operator_open_id: "ou_card_user".to_owned(),
            user_id: None,
            union_id: None,
            action_token: None,
            value: json!({}),
            tag: "button".to_owned(),
            name: None,
            form_value: None,
            timezone: "Asia/Shanghai".to_owned(),
            host: "im_message".to_owned(),
            message_id: None,
            chat_id: None,
        }
    }

    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = app_id.into();
        self
    }

    /// `header.token`: the app's Verification Token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// `header.create_time`, in microseconds as Lark writes it.
    pub fn create_time_us(mut self, us: i64) -> Self {
        self.create_time_us = Some(us);
        self
    }

    pub fn tenant_key(mut self, tenant_key: impl Into<String>) -> Self {
        self.tenant_key = tenant_key.into();
        self
    }

    /// The user who clicked (`event.operator.open_id`; `user_id` and
    /// `union_id` are derived from it unless set).
    pub fn operator(mut self, open_id: impl Into<String>) -> Self {
        self.operator_open_id = open_id.into();
        self
    }

    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    pub fn union_id(mut self, union_id: impl Into<String>) -> Self {
        self.union_id = Some(union_id.into());
        self
    }

    /// `event.token`: the callback's own token (`c-` and hex by default).
    pub fn action_token(mut self, token: impl Into<String>) -> Self {
        self.action_token = Some(token.into());
        self
    }

    /// `event.action.value`: the button's callback value.
    pub fn value(mut self, value: Value) -> Self {
        self.value = value;
        self
    }

    /// `event.action.tag` (`button` by default).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// `event.action.name`: the component's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `event.action.form_value`: component name → value.
    pub fn form_value(mut self, form_value: Map<String, Value>) -> Self {
        self.form_value = Some(form_value);
        self
    }

    /// `event.action.form_value` from string pairs.
    pub fn form_values(self, values: &[(&str, &str)]) -> Self {
        let map = values.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        self.form_value(map)
    }

    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// `event.host` (`im_message` by default).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// `event.context.open_message_id`: the card's message.
    pub fn message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }

    /// `event.context.open_chat_id`.
    pub fn chat_id(mut self, chat_id: impl Into<String>) -> Self {
        self.chat_id = Some(chat_id.into());
        self
    }

    /// The callback JSON.
    pub fn build(&self) -> Value {
        let create_time = self.create_time_us.unwrap_or_else(|| now_ms() * 1000);
        let mut header = json!({
            "event_id": self.event_id.clone().unwrap_or_else(|| random_hex(16)),
            "create_time": create_time.to_string(),
            "event_type": CARD_ACTION_TRIGGER,
            "tenant_key": self.tenant_key,
            "app_id": self.app_id,
        });
        if let Some(token) = &self.token {
            header["token"] = json!(token);
        }
        let open_id = &self.operator_open_id;
        let hash = crate::lark_events::hash_hex(open_id);
        let mut action = json!({ "value": self.value, "tag": self.tag, "timezone": self.timezone });
        if let Some(name) = &self.name {
            action["name"] = json!(name);
        }
        if let Some(form_value) = &self.form_value {
            action["form_value"] = Value::Object(form_value.clone());
        }
        let mut context = json!({});
        if let Some(id) = &self.message_id {
            context["open_message_id"] = json!(id);
        }
        if let Some(id) = &self.chat_id {
            context["open_chat_id"] = json!(id);
        }
        json!({
            "schema": "2.0",
            "header": header,
            "event": {
                "operator": {
                    "tenant_key": self.tenant_key,
                    "user_id": self.user_id.clone().unwrap_or_else(|| hash[..8].to_owned()),
                    "open_id": open_id,
                    "union_id": self.union_id.clone().unwrap_or_else(|| format!("on_{hash}")),
                },
                "token": self.action_token.clone().unwrap_or_else(|| format!("c-{}", random_hex(20))),
                "action": action,
                "host": self.host,
                "context": context,
            }
        })
    }
}
