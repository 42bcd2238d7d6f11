//! FastGPT's workflow nodes that ask the user (user-select, form) as Lark
//! cards, and the answer that comes back as a click.
//!
//! - The relay reads the node ([`Interaction`]), records the question as
//!   pending for its conversation (`{ns}_questions`, [`Pending`]) and sends it
//!   with the answer; the responder shows it ([`card`]).
//! - A click arrives at the ingress, which checks it against the pending
//!   question ([`Pending::resolve`]) before storing it, so a refusal is a
//!   toast at once and FastGPT is never asked; the relay checks again when
//!   it resumes the workflow (the conversation may have moved on meanwhile).
//! - The card's components have synthetic names (`f0`, `f1`...): FastGPT's
//!   keys may hold spaces or CJK. The button's callback value names the
//!   question and its conversation; the mapping back to FastGPT's keys and
//!   values is the pending question's, never the click's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The marker in our buttons' callback values.
pub const VALUE_MARKER: &str = "lark_bridge";
/// The longest value one field may carry, in characters.
pub const MAX_FIELD_CHARS: usize = 2_000;
/// The most a whole form may carry, in bytes of FastGPT's JSON.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// What FastGPT asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Interaction {
    /// Pick one: each option's `value` is shown on its button and sent back exactly.
    Select { description: String, options: Vec<String> },
    /// Fill in a form.
    Form { description: String, fields: Vec<Field> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// FastGPT's key: what the answer's JSON is keyed by.
    pub key: String,
    pub label: String,
    pub kind: FieldKind,
    #[serde(default)]
    pub required: bool,
    /// For `select`: (label, value).
    #[serde(default)]
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Input,
    Textarea,
    Number,
    Select,
}

/// A question as sent: its id (stable across redeliveries), the
/// conversation it belongs to, and what it asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    /// The conversation's subject token: a click goes to the same partition
    /// and queue as the conversation's messages.
    pub conversation: String,
    pub interaction: Interaction,
}

/// A question waiting for its answer, in `{ns}_questions` under its
/// conversation: one per conversation, replaced by the next question and
/// removed by a new message or a Reset (then a click on it has expired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub question: Question,
    /// FastGPT's chatId to resume in.
    pub chat_id: String,
    pub custom_uid: String,
    /// In a group each member has their own history: only this member may answer.
    #[serde(default)]
    pub asked_by: Option<String>,
    pub lark_chat_id: String,
    #[serde(default)]
    pub in_thread: bool,
    /// Who answered it (set by the ingress that stored the click).
    #[serde(default)]
    pub answered_by: Option<String>,
    /// The dataId of the FastGPT turn that asked: a resume is merged into
    /// it, so its answer is rated under it.
    #[serde(default)]
    pub data_id: Option<String>,
}

/// What a click chose, read from Lark's callback.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Option(usize),
    Form(Map<String, Value>),
}

/// A click read from a callback: which question, and what it chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Click {
    pub question: String,
    pub conversation: String,
    pub choice: Choice,
}

/// Why a click is not taken (each is said to the user as a toast).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this is not one of the bot's questions")]
    NotOurs,
    #[error("this choice has expired")]
    Expired,
    #[error("only the person who asked can answer this")]
    NotTheAsker,
    #[error("this card belongs to another chat")]
    OtherChat,
    #[error("this question is already answered")]
    Answered,
    #[error("that is not one of the choices")]
    NotAnOption,
    #[error("please fill in {0}")]
    Missing(String),
    #[error("{0} must be a number")]
    NotANumber(String),
    #[error("the form has a field this question does not have")]
    UnknownField,
    #[error("the answer is too long")]
    TooLong,
}

impl Refusal {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotOurs => "not_ours",
            Self::Expired => "expired",
            Self::NotTheAsker => "not_the_asker",
            Self::OtherChat => "other_chat",
            Self::Answered => "answered",
            Self::NotAnOption => "not_an_option",
            Self::Missing(_) => "missing_field",
            Self::NotANumber(_) => "not_a_number",
            Self::UnknownField => "unknown_field",
            Self::TooLong => "too_long",
        }
    }

    /// The toast for the user.
    pub fn toast(&self) -> String {
        let mut s = self.to_string();
        if let Some(first) = s.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        s.push('.');
        s
    }
}

/// A click checked against its pending question.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// What FastGPT gets as the user's message: the option's value exactly,
    /// or the form as JSON keyed by FastGPT's keys.
    pub content: String,
    /// What the user chose, in words (the toast and the answered card).
    pub summary: String,
}

impl Click {
    /// Reads a callback's value and form; `None` when the card is not ours.
    pub fn read(value: &Value, form: Option<&Map<String, Value>>) -> Option<Self> {
        value.get(VALUE_MARKER)?;
        let token = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
                .map(str::to_owned)
        };
        let (question, conversation) = (token("q")?, token("c")?);
        let choice = match (value.get("o").and_then(Value::as_u64), form) {
            (Some(o), _) => Choice::Option(usize::try_from(o).ok()?),
            (None, Some(form)) => Choice::Form(form.clone()),
            (None, None) => return None,
        };
        Some(Self { question, conversation, choice })
    }
}

impl Pending {
    /// Checks `click` by `operator` in `chat` (the card's chat, as Lark
    /// says) against this question: what to ask FastGPT, or why not.
    pub fn resolve(&self, click: &Click, operator: Option<&str>, chat: Option<&str>) -> Result<Resolved, Refusal> {
        if click.question != self.question.id {
            return Err(Refusal::Expired);
        }
        // A card forwarded to another chat is not a way into this conversation.
        if chat.is_some_and(|c| c != self.lark_chat_id) {
            return Err(Refusal::OtherChat);
        }
        if let Some(asker) = &self.asked_by {
            if operator != Some(asker.as_str()) {
                return Err(Refusal::NotTheAsker);
            }
        }
        match (&self.question.interaction, &click.choice) {
            (Interaction::Select { options, .. }, Choice::Option(i)) => {
                let value = options.get(*i).ok_or(Refusal::NotAnOption)?;
                Ok(Resolved { content: value.clone(), summary: value.clone() })
            }
            (Interaction::Form { fields, .. }, Choice::Form(given)) => form_answer(fields, given),
            _ => Err(Refusal::NotAnOption),
        }
    }
}

/// The form's JSON for FastGPT, keyed by its keys, from the components' values.
fn form_answer(fields: &[Field], given: &Map<String, Value>) -> Result<Resolved, Refusal> {
    if given.keys().any(|name| field_index(name).is_none_or(|i| i >= fields.len())) {
        return Err(Refusal::UnknownField);
    }
    let mut answer = Map::new();
    let mut summary = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let raw = match given.get(&component_name(i)) {
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Null) | None => String::new(),
            Some(_) => return Err(Refusal::NotAnOption),
        };
        if raw.chars().count() > MAX_FIELD_CHARS {
            return Err(Refusal::TooLong);
        }
        if raw.is_empty() {
            if field.required {
                return Err(Refusal::Missing(field.label.clone()));
            }
            continue;
        }
        let (value, shown) = match field.kind {
            FieldKind::Number => {
                let not_a_number = || Refusal::NotANumber(field.label.clone());
                // An integer stays one (42, not 42.0): FastGPT's workflow may compare it.
                let number = match raw.parse::<i64>() {
                    Ok(i) => serde_json::Number::from(i),
                    Err(_) => {
                        raw.parse::<f64>().ok().and_then(serde_json::Number::from_f64).ok_or_else(not_a_number)?
                    }
                };
                (Value::Number(number), raw.clone())
            }
            FieldKind::Select => {
                let i: usize = raw.parse().map_err(|_| Refusal::NotAnOption)?;
                let (label, value) = field.options.get(i).ok_or(Refusal::NotAnOption)?;
                (Value::String(value.clone()), label.clone())
            }
            FieldKind::Input | FieldKind::Textarea => (Value::String(raw.clone()), raw.clone()),
        };
        answer.insert(field.key.clone(), value);
        summary.push(format!("{}: {shown}", field.label));
    }
    let content = Value::Object(answer).to_string();
    if content.len() > MAX_FORM_BYTES {
        return Err(Refusal::TooLong);
    }
    Ok(Resolved { content, summary: summary.join(", ") })
}

/// The longest text a button or a field label shows (the value sent back is whole).
pub const MAX_LABEL_CHARS: usize = 100;

/// `s` cut to `max` characters, with an ellipsis when cut (what a button,
/// a toast or a chat list shows of a longer text).
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The synthetic name of field `i`'s component.
pub fn component_name(i: usize) -> String {
    format!("f{i}")
}

fn field_index(name: &str) -> Option<usize> {
    name.strip_prefix('f').filter(|d| !d.is_empty() && d.len() <= 3).and_then(|d| d.parse().ok())
}

/// How a question card looks.
#[derive(Debug, Clone, PartialEq)]
pub enum CardState<'a> {
    /// Waiting for a click.
    Open,
    /// Answered with this summary: buttons disabled, the choice shown.
    Answered { summary: &'a str, option: Option<usize> },
}

/// The card JSON 2.0 of a question.
pub fn card(q: &Question, state: &CardState<'_>, escape: impl Fn(&str) -> String) -> Value {
    let plain = |s: &str| json!({ "tag": "plain_text", "content": s });
    let answered = matches!(state, CardState::Answered { .. });
    let mut elements = Vec::new();
    let description = match &q.interaction {
        Interaction::Select { description, .. } | Interaction::Form { description, .. } => description,
    };
    if !description.trim().is_empty() {
        elements.push(json!({ "tag": "markdown", "content": escape(description) }));
    }
    match &q.interaction {
        Interaction::Select { options, .. } => {
            for (i, option) in options.iter().enumerate() {
                let chosen = matches!(state, CardState::Answered { option: Some(o), .. } if *o == i);
                elements.push(json!({
                    "tag": "button",
                    "text": plain(&clip(option, MAX_LABEL_CHARS)),
                    "type": if chosen { "primary" } else { "default" },
                    "width": "fill",
                    "disabled": answered,
                    "behaviors": [{ "type": "callback", "value": { VALUE_MARKER: 1, "q": q.id, "c": q.conversation, "o": i } }],
                }));
            }
        }
        Interaction::Form { fields, .. } if !answered => {
            let mut components = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                let label = if f.required { format!("{} *", f.label) } else { f.label.clone() };
                let mut component = match f.kind {
                    FieldKind::Select => json!({
                        "tag": "select_static",
                        "options": f.options.iter().enumerate()
                            .map(|(j, (label, _))| json!({ "text": plain(label), "value": j.to_string() }))
                            .collect::<Vec<_>>(),
                    }),
                    FieldKind::Textarea => json!({ "tag": "input", "input_type": "multiline_text", "rows": 3 }),
                    FieldKind::Number | FieldKind::Input => json!({ "tag": "input" }),
                };
                component["name"] = json!(component_name(i));
                component["required"] = json!(f.required);
                component["placeholder"] = plain(&f.label);
                components.push(json!({ "tag": "markdown", "content": escape(&label) }));
                components.push(component);
            }
            components.push(json!({
                "tag": "button",
                "name": "lb_submit",
                "text": plain("Submit"),
                "type": "primary",
                "form_action_type": "submit",
                "behaviors": [{ "type": "callback", "value": { VALUE_MARKER: 1, "q": q.id, "c": q.conversation } }],
            }));
            elements.push(json!({ "tag": "form", "name": "lb_form", "elements": components }));
        }
        Interaction::Form { .. } => {}
    }
    if let CardState::Answered { summary, .. } = state {
        elements.push(json!({ "tag": "markdown", "content": format!("✅ {}", escape(summary)) }));
    }
    // A forwarded copy of the card cannot be clicked (the ingress checks the chat too).
    let config = json!({ "update_multi": true, "enable_forward_interaction": false });
    json!({ "schema": "2.0", "config": config, "body": { "elements": elements } })
}

/// The click's JSON keys, sorted, for logs (never the values: they may be personal).
pub fn describe_form(form: &BTreeMap<String, Value>) -> String {
    form.keys().cloned().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select() -> Pending {
        Pending {
            question: Question {
                id: "q1".into(),
                conversation: "c1".into(),
                interaction: Interaction::Select {
                    description: "Which product?".into(),
                    options: vec!["Product A".into(), "产品 C".into()],
                },
            },
            chat_id: "lb-x".into(),
            custom_uid: "lark:support:ou_a".into(),
            asked_by: Some("ou_a".into()),
            lark_chat_id: "oc_1".into(),
            in_thread: false,
            answered_by: None,
            data_id: None,
        }
    }

    fn form() -> Pending {
        let field = |key: &str, kind, required| Field {
            key: key.into(),
            label: key.to_uppercase(),
            kind,
            required,
            options: vec![("Sales".into(), "sales".into()), ("R&D".into(), "rd".into())],
        };
        let mut p = select();
        p.question.interaction = Interaction::Form {
            description: "Tell me".into(),
            fields: vec![
                field("name", FieldKind::Input, true),
                field("备注 notes", FieldKind::Textarea, false),
                field("年龄", FieldKind::Number, true),
                field("dept", FieldKind::Select, false),
            ],
        };
        p
    }

    fn click(choice: Choice) -> Click {
        Click { question: "q1".into(), conversation: "c1".into(), choice }
    }

    fn form_click(pairs: &[(&str, &str)]) -> Click {
        click(Choice::Form(pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()))
    }

    #[test]
    fn an_option_resolves_to_its_exact_value() {
        let r = select().resolve(&click(Choice::Option(1)), Some("ou_a"), None).expect("taken");
        assert_eq!(r.content, "产品 C");
        assert_eq!(select().resolve(&click(Choice::Option(2)), Some("ou_a"), None), Err(Refusal::NotAnOption));
    }

    #[test]
    fn only_the_asker_and_only_the_current_question() {
        assert_eq!(select().resolve(&click(Choice::Option(0)), Some("ou_b"), None), Err(Refusal::NotTheAsker));
        assert_eq!(select().resolve(&click(Choice::Option(0)), None, None), Err(Refusal::NotTheAsker));
        let mut old = click(Choice::Option(0));
        old.question = "q0".into();
        assert_eq!(select().resolve(&old, Some("ou_a"), None), Err(Refusal::Expired));
        let mut topic = select();
        topic.asked_by = None;
        assert!(topic.resolve(&click(Choice::Option(0)), Some("ou_b"), None).is_ok(), "a topic's history is shared");
        let elsewhere = select().resolve(&click(Choice::Option(0)), Some("ou_a"), Some("oc_other"));
        assert_eq!(elsewhere, Err(Refusal::OtherChat), "a forwarded card");
        assert!(select().resolve(&click(Choice::Option(0)), Some("ou_a"), Some("oc_1")).is_ok());
    }

    #[test]
    fn a_form_resolves_to_fastgpts_keys() {
        let r = form()
            .resolve(&form_click(&[("f0", " Ann "), ("f2", "42"), ("f3", "1")]), Some("ou_a"), None)
            .expect("taken");
        let v: Value = serde_json::from_str(&r.content).expect("json");
        assert_eq!(v, json!({ "name": "Ann", "年龄": 42, "dept": "rd" }));
        assert!(r.summary.contains("NAME: Ann"), "{}", r.summary);
    }

    #[test]
    fn a_form_is_refused_with_the_reason() {
        let p = form();
        assert_eq!(p.resolve(&form_click(&[("f2", "1")]), Some("ou_a"), None), Err(Refusal::Missing("NAME".into())));
        assert_eq!(
            p.resolve(&form_click(&[("f0", "a"), ("f2", "x")]), Some("ou_a"), None),
            Err(Refusal::NotANumber("年龄".to_uppercase()))
        );
        assert_eq!(
            p.resolve(&form_click(&[("f0", "a"), ("f2", "1"), ("f9", "x")]), Some("ou_a"), None),
            Err(Refusal::UnknownField)
        );
        assert_eq!(
            p.resolve(&form_click(&[("f0", "a"), ("f2", "1"), ("name", "x")]), Some("ou_a"), None),
            Err(Refusal::UnknownField)
        );
        assert_eq!(
            p.resolve(&form_click(&[("f0", "a"), ("f2", "1"), ("f3", "7")]), Some("ou_a"), None),
            Err(Refusal::NotAnOption)
        );
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        assert_eq!(p.resolve(&form_click(&[("f0", &long), ("f2", "1")]), Some("ou_a"), None), Err(Refusal::TooLong));
    }

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("产品", 5), "产品");
    }

    #[test]
    fn a_click_is_read_only_from_our_values() {
        let v = json!({ VALUE_MARKER: 1, "q": "q1", "c": "c1", "o": 0 });
        assert_eq!(Click::read(&v, None), Some(click(Choice::Option(0))));
        assert_eq!(Click::read(&json!({ "q": "q1", "c": "c1", "o": 0 }), None), None, "not ours");
        assert_eq!(
            Click::read(&json!({ VALUE_MARKER: 1, "q": "q1.>", "c": "c1", "o": 0 }), None),
            None,
            "a key injection"
        );
        assert_eq!(
            Click::read(&json!({ VALUE_MARKER: 1, "q": "q1", "c": "c1" }), None),
            None,
            "neither option nor form"
        );
    }

    #[test]
    fn cards_carry_synthetic_names_and_disable_once_answered() {
        let p = form();
        let open = card(&p.question, &CardState::Open, str::to_owned);
        let form = &open["body"]["elements"][1];
        assert_eq!(form["tag"], "form");
        let names: Vec<&str> = form["elements"]
            .as_array()
            .expect("components")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .filter(|n| *n != "lb_submit")
            .collect();
        assert_eq!(names, ["f0", "f1", "f2", "f3"], "synthetic names, never FastGPT's keys");
        let s = select();
        let done = card(&s.question, &CardState::Answered { summary: "Product A", option: Some(0) }, str::to_owned);
        let buttons: Vec<&Value> =
            done["body"]["elements"].as_array().expect("elements").iter().filter(|e| e["tag"] == "button").collect();
        assert!(buttons.iter().all(|b| b["disabled"] == true));
        assert_eq!(buttons[0]["type"], "primary");
    }
}
