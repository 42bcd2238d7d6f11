//! FastGPT's interactive nodes, read into [`Interaction`]s.
//!
//! With `detail: true` a run that reaches a user-select or form node ends
//! with the node: `event: interactive` `{"interactive": {...}}` when
//! streaming, an item `{"type": "interactive", "interactive": {...}}` of the
//! answer's content array otherwise. Nodes inside a nested workflow or a loop
//! come wrapped (`childrenInteractive`, `loopInteractive`: the node is in
//! `params.childrenResponse`). Shapes from labring/FastGPT,
//! `packages/global/core/workflow/template/system/interactive/type.d.ts`.

use common::question::{Field, FieldKind, Interaction};
use serde_json::Value;

/// How deep wrappers may nest before the node is given up on.
const MAX_DEPTH: usize = 8;
/// What one card shows at most (a card over 30 KB would be refused, and the
/// answer before it with it): options, form fields, description characters.
const MAX_OPTIONS: usize = 50;
const MAX_FIELDS: usize = 30;
const MAX_DESCRIPTION_CHARS: usize = 4_000;

/// The node in `value` (an `interactive` event's data, or the object under
/// its `interactive` key); `None` when it is not a kind the bridge shows.
pub fn read(value: &Value) -> Option<Interaction> {
    let node = value.get("interactive").unwrap_or(value);
    read_node(node, 0)
}

fn read_node(node: &Value, depth: usize) -> Option<Interaction> {
    if depth > MAX_DEPTH {
        return None;
    }
    let params = node.get("params").unwrap_or(&Value::Null);
    let text = |v: &Value, k: &str| {
        v.get(k).and_then(Value::as_str).unwrap_or("").chars().take(MAX_DESCRIPTION_CHARS).collect::<String>()
    };
    match node.get("type").and_then(Value::as_str) {
        Some("userSelect") => {
            let options: Vec<String> = params
                .get("userSelectOptions")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(|o| o.get("value").and_then(Value::as_str).map(str::to_owned))
                .filter(|v| !v.is_empty())
                .take(MAX_OPTIONS)
                .collect();
            (!options.is_empty()).then(|| Interaction::Select { description: text(params, "description"), options })
        }
        Some("userInput") => {
            let fields: Vec<Field> = params
                .get("inputForm")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(read_field)
                .take(MAX_FIELDS)
                .collect();
            (!fields.is_empty()).then(|| Interaction::Form { description: text(params, "description"), fields })
        }
        Some("childrenInteractive") | Some("loopInteractive") => read_node(params.get("childrenResponse")?, depth + 1),
        _ => None,
    }
}

/// One form field. FastGPT's input types beyond the four the card shows
/// (switch, date, file...) are shown as text inputs: the user can still type
/// the value FastGPT expects.
fn read_field(f: &Value) -> Option<Field> {
    let key = f.get("key").and_then(Value::as_str).filter(|k| !k.is_empty())?.to_owned();
    let label: String = f
        .get("label")
        .and_then(Value::as_str)
        .filter(|l| !l.trim().is_empty())
        .unwrap_or(&key)
        .chars()
        .take(common::question::MAX_LABEL_CHARS)
        .collect();
    let options: Vec<(String, String)> = f
        .get("list")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|o| {
                    let value = o.get("value").and_then(Value::as_str)?;
                    let label = o.get("label").and_then(Value::as_str).unwrap_or(value);
                    Some((label.to_owned(), value.to_owned()))
                })
                .take(MAX_OPTIONS)
                .collect()
        })
        .unwrap_or_default();
    let kind = match f.get("type").and_then(Value::as_str) {
        Some("textarea") => FieldKind::Textarea,
        Some("numberInput") => FieldKind::Number,
        Some("select") if !options.is_empty() => FieldKind::Select,
        _ => FieldKind::Input,
    };
    let required = f.get("required").and_then(Value::as_bool).unwrap_or(false);
    Some(Field { key, label, kind, required, options })
}

/// The node in a non-streamed answer's content array, if any.
pub fn in_content(content: &Value) -> Option<Interaction> {
    content.as_array()?.iter().filter_map(|item| item.get("interactive")).find_map(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_select() -> Value {
        json!({
            "type": "userSelect",
            "entryNodeIds": ["n1"],
            "memoryEdges": [],
            "nodeOutputs": [],
            "params": {
                "description": "Which product?",
                "userSelectOptions": [{ "key": "option1", "value": "Product A" }, { "key": "option2", "value": "产品 C" }],
                "userSelectedVal": null
            }
        })
    }

    fn user_input() -> Value {
        json!({
            "type": "userInput",
            "params": {
                "description": "Tell me about you",
                "inputForm": [
                    { "type": "input", "key": "name", "label": "Your name", "required": true, "maxLength": 50 },
                    { "type": "textarea", "key": "备注 notes", "label": "Notes", "required": false },
                    { "type": "numberInput", "key": "年龄", "label": "Age", "required": true, "min": 0, "max": 150 },
                    { "type": "select", "key": "dept", "label": "Department", "required": false,
                      "list": [{ "label": "Sales", "value": "sales" }, { "label": "R&D", "value": "rd" }] },
                    { "type": "switch", "key": "agree", "label": "" }
                ]
            }
        })
    }

    #[test]
    fn a_user_select_node() {
        let want = Interaction::Select {
            description: "Which product?".into(),
            options: vec!["Product A".into(), "产品 C".into()],
        };
        assert_eq!(read(&json!({ "interactive": user_select() })), Some(want.clone()), "an event's data");
        assert_eq!(read(&user_select()), Some(want), "the node itself");
    }

    #[test]
    fn a_form_node_with_each_field_type() {
        let Some(Interaction::Form { description, fields }) = read(&json!({ "interactive": user_input() })) else {
            panic!("a form")
        };
        assert_eq!(description, "Tell me about you");
        let kinds: Vec<FieldKind> = fields.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FieldKind::Input, FieldKind::Textarea, FieldKind::Number, FieldKind::Select, FieldKind::Input]
        );
        assert!(fields[0].required && !fields[1].required);
        assert_eq!(fields[1].key, "备注 notes");
        assert_eq!(fields[3].options, [("Sales".to_owned(), "sales".to_owned()), ("R&D".to_owned(), "rd".to_owned())]);
        assert_eq!(fields[4].label, "agree", "an empty label falls back to the key");
    }

    #[test]
    fn wrapped_nodes_are_unwrapped() {
        let nested = json!({ "type": "childrenInteractive", "params": { "childrenResponse": user_select() } });
        let looped = json!({ "type": "loopInteractive", "params": { "loopResult": [], "childrenResponse": nested } });
        assert!(matches!(read(&json!({ "interactive": looped })), Some(Interaction::Select { .. })));
        let mut deep = user_select();
        for _ in 0..20 {
            deep = json!({ "type": "childrenInteractive", "params": { "childrenResponse": deep } });
        }
        assert_eq!(read(&deep), None, "too deep");
    }

    #[test]
    fn the_non_streamed_content_array() {
        let content = json!([
            { "type": "text", "text": { "content": "Let me help." } },
            { "type": "interactive", "interactive": user_input() }
        ]);
        assert!(matches!(in_content(&content), Some(Interaction::Form { .. })));
        assert_eq!(in_content(&json!("just text")), None);
        let untyped = json!([{ "interactive": user_select() }]);
        assert!(in_content(&untyped).is_some(), "an item without `type`");
    }

    #[test]
    fn nodes_the_bridge_does_not_show() {
        assert_eq!(read(&json!({ "interactive": { "type": "agentPlanCheck", "params": {} } })), None);
        assert_eq!(read(&json!({ "type": "userSelect", "params": { "userSelectOptions": [] } })), None);
        assert_eq!(read(&json!(null)), None);
    }
}
