//! What the node waiting in a chatId makes of the next message, as
//! FastGPT's resume reads it (see the module documentation): a
//! user-select's exact option `value`, a form's JSON object (checked for
//! nothing), anything else not an answer; and the answer the fake's apps
//! give to each.

use std::fmt::Write as _;

use serde_json::Value;

use super::{FormField, Interactive, InteractiveNode, NotAnAnswer, Resume};

impl Interactive {
    /// What the node makes of the next message `text` in its chatId.
    pub fn resume_with(&self, text: &str) -> Resume {
        let not_an_answer = || Resume::NotAnAnswer { node: self.kind(), text: text.to_owned() };
        match &self.node {
            InteractiveNode::UserSelect { options, .. } => match options.iter().find(|o| o.value == text) {
                Some(o) => Resume::Select { key: o.key.clone(), value: o.value.clone() },
                None => not_an_answer(),
            },
            InteractiveNode::UserInput { fields, .. } => {
                let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
                    return not_an_answer();
                };
                let values =
                    fields.iter().filter_map(|f| map.get(&f.key).map(|v| (f.key.clone(), v.clone()))).collect();
                let missing_required = fields
                    .iter()
                    .filter(|f| f.required && map.get(&f.key).is_none_or(is_empty))
                    .map(|f| f.key.clone())
                    .collect();
                let mut unknown: Vec<String> =
                    map.keys().filter(|k| !fields.iter().any(|f| &f.key == *k)).cloned().collect();
                unknown.sort();
                Resume::Form { values, missing_required, unknown }
            }
        }
    }

    /// The answer of the run that resumes at the node with `resume`, as the
    /// fake's apps answer it; `None` when the run answers nothing (every
    /// branch skipped) or the text is to be answered afresh.
    pub fn resumed_answer(&self, resume: &Resume, policy: NotAnAnswer) -> Option<String> {
        match (resume, &self.node) {
            (Resume::Select { value, .. }, _) => Some(format!("You chose: {value}.")),
            (Resume::Form { values, .. }, InteractiveNode::UserInput { fields, .. }) => {
                Some(form_received(fields, values))
            }
            (Resume::NotAnAnswer { .. }, _) if policy == NotAnAnswer::Restarts => None,
            (Resume::NotAnAnswer { .. }, InteractiveNode::UserInput { fields, .. }) => Some(form_received(fields, &[])),
            _ => Some(String::new()),
        }
    }
}

/// An empty form value: `null` or only whitespace.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// `Form received: name = Ann, 备注 notes = (empty), 年龄 = 30, dept = rd.`:
/// every field in the form's order, `(missing)` for a key not given.
pub fn form_received(fields: &[FormField], values: &[(String, Value)]) -> String {
    let mut out = String::from("Form received: ");
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let shown = match values.iter().find(|(k, _)| *k == field.key).map(|(_, v)| v) {
            None => "(missing)".to_owned(),
            Some(v) if is_empty(v) => "(empty)".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let _ = write!(out, "{} = {shown}", field.key);
    }
    out.push('.');
    out
}
