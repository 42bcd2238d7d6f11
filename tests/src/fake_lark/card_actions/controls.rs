//! Reading a card as a user sees it: its callback buttons and its forms
//! (with their components), wherever a card nests them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which button of a card: its place among the card's callback buttons
/// (from 0, in document order, forms' submit buttons included), its text,
/// or its `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonRef {
    Index(usize),
    Text(String),
    Name(String),
}

impl From<usize> for ButtonRef {
    fn from(index: usize) -> Self {
        ButtonRef::Index(index)
    }
}

impl From<&str> for ButtonRef {
    fn from(text: &str) -> Self {
        ButtonRef::Text(text.to_owned())
    }
}

/// A button with a `callback` behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardButton {
    /// Its place among the card's callback buttons (from 0).
    pub index: usize,
    /// `text.content`.
    pub text: String,
    pub name: Option<String>,
    /// The callback behaviour's `value` (or, in a JSON 1.0 card, the button's `value`).
    pub value: Value,
    pub disabled: bool,
    /// The form it is in, by name.
    pub form: Option<String>,
    /// `form_action_type: "submit"`.
    pub submit: bool,
}

/// An input component of a form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormComponent {
    /// `input`, `select_static`, ...
    pub tag: String,
    pub name: String,
    /// `label.content`, else `placeholder.content`, else the name.
    pub label: String,
    pub required: bool,
    /// An `input` with `input_type: "multiline_text"`.
    pub multiline: bool,
    /// A select's options: (text, value).
    pub options: Vec<(String, String)>,
    pub disabled: bool,
}

/// A `form` container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardForm {
    pub name: String,
    pub components: Vec<FormComponent>,
    /// Its first submit button.
    pub submit: Option<CardButton>,
}

/// What a user can do with a card: see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CardControls {
    /// Every callback button, forms' included, in document order.
    pub buttons: Vec<CardButton>,
    pub forms: Vec<CardForm>,
}

impl CardControls {
    /// Reads a card's JSON (2.0 or 1.0).
    pub fn of(card: &Value) -> Self {
        let mut controls = CardControls::default();
        walk(card, None, &mut controls);
        controls
    }

    /// The buttons outside forms: the choices of a question card.
    pub fn choices(&self) -> Vec<&CardButton> {
        self.buttons.iter().filter(|b| b.form.is_none()).collect()
    }

    /// Anything to click or fill in.
    pub fn is_empty(&self) -> bool {
        self.buttons.is_empty() && self.forms.is_empty()
    }

    /// The button `which` names.
    pub fn find(&self, which: &ButtonRef) -> Option<&CardButton> {
        match which {
            ButtonRef::Index(i) => self.buttons.get(*i),
            ButtonRef::Text(t) => self.buttons.iter().find(|b| &b.text == t),
            ButtonRef::Name(n) => self.buttons.iter().find(|b| b.name.as_ref() == Some(n)),
        }
    }
}

fn text_content(v: Option<&Value>) -> Option<String> {
    v.and_then(|t| t.get("content")).and_then(Value::as_str).map(str::to_owned)
}

fn walk(v: &Value, form: Option<&str>, out: &mut CardControls) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, form, out)),
        Value::Object(map) => {
            let tag = map.get("tag").and_then(Value::as_str).unwrap_or_default();
            let name = map.get("name").and_then(Value::as_str).map(str::to_owned);
            match tag {
                "form" => {
                    let form_name = name.unwrap_or_default();
                    out.forms.push(CardForm { name: form_name.clone(), components: Vec::new(), submit: None });
                    map.values().for_each(|c| walk(c, Some(&form_name), out));
                    return;
                }
                "button" => {
                    let callback = map
                        .get("behaviors")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|b| b.get("type").and_then(Value::as_str) == Some("callback"))
                        .map(|b| b.get("value").cloned().unwrap_or(Value::Null))
                        // JSON 1.0: the button's own value.
                        .or_else(|| map.get("value").cloned());
                    let submit = map.get("form_action_type").and_then(Value::as_str) == Some("submit");
                    if callback.is_some() || submit {
                        let button = CardButton {
                            index: out.buttons.len(),
                            text: text_content(map.get("text")).unwrap_or_default(),
                            name,
                            value: callback.unwrap_or(Value::Null),
                            disabled: map.get("disabled").and_then(Value::as_bool).unwrap_or(false),
                            form: form.map(str::to_owned),
                            submit,
                        };
                        if let (true, Some(f)) =
                            (submit, out.forms.iter_mut().rev().find(|f| Some(f.name.as_str()) == form))
                        {
                            f.submit.get_or_insert_with(|| button.clone());
                        }
                        out.buttons.push(button);
                    }
                    return;
                }
                _ => {}
            }
            if let (Some(form_name), Some(name)) = (form, &name) {
                if is_input(tag) {
                    let options = map
                        .get("options")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|o| {
                            let text = text_content(o.get("text")).unwrap_or_default();
                            (text, o.get("value").and_then(Value::as_str).unwrap_or_default().to_owned())
                        })
                        .collect();
                    let component = FormComponent {
                        tag: tag.to_owned(),
                        name: name.clone(),
                        label: text_content(map.get("label"))
                            .or_else(|| text_content(map.get("placeholder")))
                            .unwrap_or_else(|| name.clone()),
                        required: map.get("required").and_then(Value::as_bool).unwrap_or(false),
                        multiline: map.get("input_type").and_then(Value::as_str) == Some("multiline_text"),
                        options,
                        disabled: map.get("disabled").and_then(Value::as_bool).unwrap_or(false),
                    };
                    if let Some(f) = out.forms.iter_mut().rev().find(|f| f.name == form_name) {
                        f.components.push(component);
                    }
                    return;
                }
            }
            map.values().for_each(|c| walk(c, form, out));
        }
        _ => {}
    }
}

/// The tags of the components a form submits.
fn is_input(tag: &str) -> bool {
    matches!(
        tag,
        "input"
            | "select_static"
            | "multi_select_static"
            | "select_person"
            | "multi_select_person"
            | "date_picker"
            | "picker_time"
            | "picker_datetime"
            | "checker"
            | "select_img"
    )
}
