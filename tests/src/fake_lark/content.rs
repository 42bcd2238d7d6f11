//! Reading a sent message back as text, whatever form the bot chose.
//!
//! Tests assert on what a Lark user reads, and the responder may send an answer
//! as text, as a `post` with `md` runs, or as a card (JSON 2.0 or 1.0): this
//! turns each into plain lines so assertions need not know which.

use serde_json::Value;

/// The readable text of a message's decoded content: `text`; a `post`'s title
/// and runs (with or without a locale wrapper); a card's header title and its
/// markdown / plain_text / div texts (card JSON 2.0 `body.elements` or 1.0
/// `elements`). Other types give an empty string.
///
/// A card's controls get a line each, as a user sees them: a button is its
/// text in brackets, `[Product A]`, followed by ` (disabled)` when it is; a
/// form's input is `Label: ____` (`Label (required): ____` when required,
/// its default value instead of `____` when it has one); a select is
/// `Label: ▾ Sales | R&D` (option texts). The label is the component's
/// `label`, else its `placeholder`, else its `name`; a disabled input ends
/// with ` (disabled)` too.
pub fn content_text(msg_type: &str, content: &Value) -> String {
    match msg_type {
        "text" => content.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
        "post" => post_text(content),
        "interactive" => card_text(content),
        _ => String::new(),
    }
}

fn post_text(content: &Value) -> String {
    let post = if content.get("content").is_some() {
        content
    } else {
        ["zh_cn", "en_us", "ja_jp"]
            .iter()
            .find_map(|l| content.get(*l))
            .or_else(|| content.as_object().and_then(|m| m.values().next()))
            .unwrap_or(&Value::Null)
    };
    let mut lines = Vec::new();
    if let Some(title) = post.get("title").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        lines.push(title.to_owned());
    }
    for paragraph in post.get("content").and_then(Value::as_array).into_iter().flatten() {
        let mut line = String::new();
        for run in paragraph.as_array().into_iter().flatten() {
            match run.get("tag").and_then(Value::as_str) {
                Some("at") => {
                    let name = run.get("user_name").or_else(|| run.get("user_id"));
                    line.push('@');
                    line.push_str(name.and_then(Value::as_str).unwrap_or_default());
                }
                Some("hr") => line.push_str("---"),
                _ => line.push_str(run.get("text").and_then(Value::as_str).unwrap_or_default()),
            }
        }
        lines.push(line);
    }
    lines.join("\n")
}

fn card_text(card: &Value) -> String {
    let mut out = Vec::new();
    if let Some(title) = card.pointer("/header/title/content").and_then(Value::as_str) {
        out.push(title.to_owned());
    }
    let elements = card
        .pointer("/body/elements")
        .or_else(|| card.get("elements"))
        .or_else(|| card.get("i18n_elements").and_then(|m| m.as_object()?.values().next()));
    walk_elements(elements, &mut out);
    out.join("\n")
}

fn walk_elements(elements: Option<&Value>, out: &mut Vec<String>) {
    for element in elements.and_then(Value::as_array).into_iter().flatten() {
        let text_of = |v: Option<&Value>| v.and_then(|t| t.get("content")).and_then(Value::as_str).map(str::to_owned);
        match element.get("tag").and_then(Value::as_str) {
            Some("markdown" | "plain_text" | "lark_md") => {
                out.extend(element.get("content").and_then(Value::as_str).map(str::to_owned));
            }
            Some("div") => {
                out.extend(text_of(element.get("text")));
                for field in element.get("fields").and_then(Value::as_array).into_iter().flatten() {
                    out.extend(text_of(field.get("text")));
                }
            }
            Some("column_set") => {
                for column in element.get("columns").and_then(Value::as_array).into_iter().flatten() {
                    walk_elements(column.get("elements"), out);
                }
            }
            Some("collapsible_panel") => {
                out.extend(text_of(element.pointer("/header/title")));
                walk_elements(element.get("elements"), out);
            }
            Some("button") => {
                let text = text_of(element.get("text")).unwrap_or_default();
                out.push(format!("[{text}]{}", disabled(element)));
            }
            Some(tag @ ("input" | "select_static" | "multi_select_static")) => {
                let label = text_of(element.get("label"))
                    .or_else(|| text_of(element.get("placeholder")))
                    .or_else(|| element.get("name").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                let required = match element.get("required").and_then(Value::as_bool) {
                    Some(true) => " (required)",
                    _ => "",
                };
                let shown = if tag == "input" {
                    element.get("default_value").and_then(Value::as_str).unwrap_or("____").to_owned()
                } else {
                    let options = element.get("options").and_then(Value::as_array).into_iter().flatten();
                    let texts: Vec<String> = options.filter_map(|o| text_of(o.get("text"))).collect();
                    format!("▾ {}", texts.join(" | "))
                };
                out.push(format!("{label}{required}: {shown}{}", disabled(element)));
            }
            // JSON 1.0: buttons in an `action` element.
            Some("action") => walk_elements(element.get("actions"), out),
            _ => walk_elements(element.get("elements"), out),
        }
    }
}

/// ` (disabled)` for a disabled component.
fn disabled(element: &Value) -> &'static str {
    match element.get("disabled").and_then(Value::as_bool) {
        Some(true) => " (disabled)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_of_post_and_card_1_0() {
        let post = json!({ "zh_cn": { "title": "T", "content": [[{ "tag": "md", "text": "a" }, { "tag": "text", "text": "b" }]] } });
        assert_eq!(content_text("post", &post), "T\nab");
        let card = json!({ "header": { "title": { "tag": "plain_text", "content": "H" } },
            "elements": [{ "tag": "div", "text": { "tag": "lark_md", "content": "x" } }, { "tag": "markdown", "content": "y" }] });
        assert_eq!(content_text("interactive", &card), "H\nx\ny");
    }

    #[test]
    fn text_of_card_2_0_and_received_post() {
        let card = json!({ "schema": "2.0", "body": { "elements": [
            { "tag": "markdown", "content": "**a**" },
            { "tag": "column_set", "columns": [{ "elements": [{ "tag": "markdown", "content": "b" }] }] } ] } });
        assert_eq!(content_text("interactive", &card), "**a**\nb");
        let post = json!({ "title": "", "content": [[{ "tag": "at", "user_id": "@_user_1", "user_name": "Tom" }, { "tag": "text", "text": " hi" }]] });
        assert_eq!(content_text("post", &post), "@Tom hi");
        assert_eq!(content_text("image", &json!({ "image_key": "img" })), "");
    }

    #[test]
    fn buttons_and_forms_read_as_a_user_sees_them() {
        let button = |text: &str, disabled: bool| {
            json!({ "tag": "button", "text": { "tag": "plain_text", "content": text }, "disabled": disabled,
                "behaviors": [{ "type": "callback", "value": { "o": text } }] })
        };
        let card = json!({ "schema": "2.0", "body": { "elements": [
            { "tag": "markdown", "content": "Which product?" },
            { "tag": "column_set", "columns": [{ "elements": [button("Product A", false)] }, { "elements": [button("产品 C", true)] }] },
            { "tag": "form", "name": "f", "elements": [
                { "tag": "input", "name": "f0", "label": { "tag": "plain_text", "content": "Your name" }, "required": true },
                { "tag": "input", "name": "f1", "placeholder": { "tag": "plain_text", "content": "Notes" }, "input_type": "multiline_text", "default_value": "none" },
                { "tag": "select_static", "name": "f3", "options": [
                    { "text": { "tag": "plain_text", "content": "Sales" }, "value": "v0" },
                    { "text": { "tag": "plain_text", "content": "R&D" }, "value": "v1" }] },
                { "tag": "button", "name": "submit", "form_action_type": "submit", "text": { "tag": "plain_text", "content": "Submit" } }
            ] }
        ] } });
        assert_eq!(
            content_text("interactive", &card),
            "Which product?\n[Product A]\n[产品 C] (disabled)\nYour name (required): ____\nNotes: none\nf3: ▾ Sales | R&D\n[Submit]"
        );
        let v1 = json!({ "elements": [{ "tag": "action", "actions": [button("Yes", false)] }] });
        assert_eq!(content_text("interactive", &v1), "[Yes]");
    }
}
