//! What an interactive node asks: a user-select's options (the user answers
//! with an option's `value`) and a form's fields, in the shape and key
//! order FastGPT serialises them, with builders for each field type the
//! bridge renders.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One option of a user-select node; the user answers with its `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectOption {
    pub key: String,
    pub value: String,
}

/// One `{label, value}` of a form's `select` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    pub label: String,
    pub value: String,
}

/// A field of a form node, as FastGPT's `UserInputFormItemType` (field order
/// and names as it serialises them; absent options are left out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormField {
    /// `input`, `textarea`, `numberInput`, `select`, `switch`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub label: String,
    pub value: Value,
    /// `string`, `number`, `boolean`, ...
    pub value_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<Value>,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<ListItem>>,
}

impl FormField {
    fn new(kind: &str, key: &str, label: &str, value_type: &str, required: bool) -> Self {
        Self {
            kind: kind.to_owned(),
            key: key.to_owned(),
            label: label.to_owned(),
            value: json!(""),
            value_type: value_type.to_owned(),
            description: None,
            default_value: None,
            required,
            max_length: None,
            max: None,
            min: None,
            list: None,
        }
    }

    /// A one-line text field.
    pub fn input(key: &str, label: &str, required: bool) -> Self {
        Self::new("input", key, label, "string", required)
    }

    /// A multi-line text field.
    pub fn textarea(key: &str, label: &str, required: bool) -> Self {
        Self::new("textarea", key, label, "string", required)
    }

    /// A number field between `min` and `max`.
    pub fn number(key: &str, label: &str, required: bool, min: Option<i64>, max: Option<i64>) -> Self {
        Self { min, max, ..Self::new("numberInput", key, label, "number", required) }
    }

    /// A drop-down of `(label, value)` items.
    pub fn select(key: &str, label: &str, required: bool, items: &[(&str, &str)]) -> Self {
        let list = items.iter().map(|(l, v)| ListItem { label: (*l).to_owned(), value: (*v).to_owned() }).collect();
        Self { list: Some(list), ..Self::new("select", key, label, "string", required) }
    }
}
