//! FastGPT's interactive workflow nodes: a user-select node ("Which
//! product?", one option per branch) and a form node (`userInput`), which end
//! a run with a question for the user, and the resume of that run by the
//! user's next message in the same chatId.
//!
//! # Shapes (labring/FastGPT)
//!
//! - The node's result is `{"type": "userSelect", "params": {"description",
//!   "userSelectOptions": [{"key", "value"}]}}` or `{"type": "userInput",
//!   "params": {"description", "inputForm": [...]}}`
//!   (`packages/service/core/workflow/dispatch/interactive/userSelect.ts`,
//!   `formInput.ts`; `userSelectedVal` and `submitted` are set later, in the
//!   stored history, not in the answer). A form item is
//!   `UserInputFormItemType` (`packages/global/core/workflow/template/system/
//!   interactive/type.ts`): `type` (`FlowNodeInputTypeEnum`: `input`,
//!   `textarea`, `numberInput`, `select`, `switch`, ...), `key`, `label`,
//!   `value`, `valueType`, `description?`, `defaultValue?`, `required`,
//!   `maxLength?`, `max?`, `min?`, `list?: [{label, value}]`.
//! - `handleInteractiveResult` (`packages/service/core/workflow/dispatch/
//!   index.ts`) spreads that result and adds `skipNodeQueue`, `entryNodeIds`
//!   (the node), `memoryEdges` (the run's edges, those into the node
//!   `active`) and `nodeOutputs` (`{nodeId, key, value}` of every output with
//!   a value), in that key order; at the root it writes `event: interactive`
//!   / `data: {"interactive": ...}` once the run ended, before `event:
//!   workflowDuration`. The event is a "detail" event: without `detail:
//!   true` it is not written (`getWorkflowResponseWrite`).
//! - A node inside a child app (plugin / app node) or a loop comes wrapped:
//!   `{"type": "childrenInteractive", "params": {"childrenResponse": <the
//!   child's whole result>}}` (`dispatch/child/runApp.ts`) or `{"type":
//!   "loopInteractive", "params": {"currentIndex", "childrenResponse",
//!   "loopResult"}}` (`dispatch/loop/runLoop.ts`), each with its own
//!   `entryNodeIds`, `memoryEdges`, `nodeOutputs`.
//! - Not streamed, with `detail: true`, `choices[0].message.content` is the
//!   array of the answer's values (`projects/app/src/pages/api/v1/chat/
//!   completions.ts`): [`ArrayStyle::Legacy`] `[{"type": "text", "text":
//!   {"content"}}, {"type": "interactive", "interactive": <whole>}]`; newer
//!   FastGPT (`formatCompletionResponseContent`) puts `type` last
//!   ([`ArrayStyle::Public`]) and gives only the deepest node's public
//!   fields (`{"type", "params"}`, no `childrenResponse`), and without `type`
//!   at all on its v2 API ([`ArrayStyle::Untyped`]). Without `detail` the
//!   content is the text alone (the question is lost).
//!
//! # Resume
//!
//! FastGPT looks at the last AI message of the chatId
//! (`getLastInteractiveValue`): when it ends with a node not answered yet,
//! the next run starts at that node whatever the message says. A user-select
//! takes the message's text as the chosen option's `value`: an exact match
//! runs that branch; anything else skips every branch (the run ends with no
//! answer). A form parses the text as JSON (not JSON: `{}`) and goes on with
//! its keys as the node's outputs; nothing checks required keys or unknown
//! ones. The fake does the same ([`NotAnAnswer::SkipsBranches`], the default),
//! or, with [`NotAnAnswer::Restarts`], forgets the node and answers the text
//! as a fresh question. What the node made of each message is recorded in
//! [`super::FastGptRequest::resume`].

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The workflow start node's id in FastGPT apps.
const START_NODE: &str = "448745";
/// The node that wrote the answer text before the question.
const ANSWER_NODE: &str = "nZ3vKq8w2Lm1";
const SELECT_NODE: &str = "uS7e1ectN0de";
const FORM_NODE: &str = "fO7rmInputNd";
/// The app (plugin) node a nested question runs in.
const CHILD_APP_NODE: &str = "cH1ldApp0Nd3";
const LOOP_NODE: &str = "l0opN0de5x2a";

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

/// The node a run stopped at.
#[derive(Clone, Debug, PartialEq)]
pub enum InteractiveNode {
    /// `userSelect`: one option per branch.
    UserSelect { description: String, options: Vec<SelectOption> },
    /// `userInput`: a form.
    UserInput { description: String, fields: Vec<FormField> },
}

/// Which kind of node: see [`InteractiveNode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    UserSelect,
    UserInput,
}

/// Where the node sits: at the root of the app, or wrapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Wrapper {
    #[default]
    None,
    /// In a child app or plugin: `childrenInteractive`.
    Children,
    /// In a loop's body: `loopInteractive`.
    Loop,
}

/// An answer that ends with an interactive node: `text` (the answer before
/// the question, may be empty), then the node.
#[derive(Clone, Debug, PartialEq)]
pub struct Interactive {
    pub text: String,
    pub node: InteractiveNode,
    pub wrapper: Wrapper,
}

/// The shape of a non-streamed answer's content array: see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ArrayStyle {
    /// `{"type": "text", "text": ...}`, `{"type": "interactive", "interactive": <whole>}`.
    #[default]
    Legacy,
    /// `{"text": ..., "type": "text"}`, `{"interactive": {"type", "params"}, "type": "interactive"}`.
    Public,
    /// `{"text": ...}`, `{"interactive": {"type", "params"}}`: no `type`.
    Untyped,
}

/// What the fake does with a message that does not answer the node waiting in its chatId.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NotAnAnswer {
    /// As FastGPT: the node takes it anyway. A user-select skips every
    /// branch (an empty answer); a form goes on with `{}` (text not JSON)
    /// or with the keys it got.
    #[default]
    SkipsBranches,
    /// The node is forgotten and the text answered as a fresh question.
    Restarts,
}

/// What the node waiting in a chatId made of the next message: recorded in
/// [`super::FastGptRequest::resume`].
#[derive(Clone, Debug, PartialEq)]
pub enum Resume {
    /// The text was an option's `value`, exactly.
    Select { key: String, value: String },
    /// The text was a JSON object: its values by key, in the form's order
    /// (the keys it had of the form's), the form's required keys it lacked,
    /// and the keys the form does not have (sorted).
    Form { values: Vec<(String, Value)>, missing_required: Vec<String>, unknown: Vec<String> },
    /// Not an answer to the node: not one of the options' values, or not a
    /// JSON object for a form. See [`NotAnAnswer`] for what follows.
    NotAnAnswer { node: NodeKind, text: String },
}

impl Interactive {
    /// The sandbox's user-select app: "Let me help you choose." and three products.
    pub fn select_app() -> Self {
        let options = [("option1", "Product A"), ("option2", "Product B"), ("option3", "产品 C")];
        Self {
            text: "Let me help you choose.".to_owned(),
            node: InteractiveNode::UserSelect {
                description: "Which product?".to_owned(),
                options: options
                    .iter()
                    .map(|(k, v)| SelectOption { key: (*k).to_owned(), value: (*v).to_owned() })
                    .collect(),
            },
            wrapper: Wrapper::None,
        }
    }

    /// The sandbox's form app: a field of each type the bridge renders
    /// (input, textarea, number, select), keys with a space and CJK.
    pub fn form_app() -> Self {
        Self {
            text: "Please fill in the form.".to_owned(),
            node: InteractiveNode::UserInput {
                description: "Tell us about you".to_owned(),
                fields: vec![
                    FormField { max_length: Some(50), ..FormField::input("name", "Your name", true) },
                    FormField::textarea("备注 notes", "Notes", false),
                    FormField::number("年龄", "Age", true, Some(1), Some(120)),
                    FormField::select("dept", "Department", false, &[("Sales", "sales"), ("R&D", "rd")]),
                ],
            },
            wrapper: Wrapper::None,
        }
    }

    /// A user-select after `text`, with `(key, value)` options.
    pub fn user_select(text: &str, description: &str, options: &[(&str, &str)]) -> Self {
        Self {
            text: text.to_owned(),
            node: InteractiveNode::UserSelect {
                description: description.to_owned(),
                options: options
                    .iter()
                    .map(|(k, v)| SelectOption { key: (*k).to_owned(), value: (*v).to_owned() })
                    .collect(),
            },
            wrapper: Wrapper::None,
        }
    }

    /// A form after `text`.
    pub fn form(text: &str, description: &str, fields: Vec<FormField>) -> Self {
        Self {
            text: text.to_owned(),
            node: InteractiveNode::UserInput { description: description.to_owned(), fields },
            wrapper: Wrapper::None,
        }
    }

    /// The same node wrapped in a child app, or a loop.
    pub fn wrapped(self, wrapper: Wrapper) -> Self {
        Self { wrapper, ..self }
    }

    pub fn kind(&self) -> NodeKind {
        match self.node {
            InteractiveNode::UserSelect { .. } => NodeKind::UserSelect,
            InteractiveNode::UserInput { .. } => NodeKind::UserInput,
        }
    }

    /// `{"interactive": <whole>}`: the data of `event: interactive`, in
    /// FastGPT's key order. `question` is the run's user input (in `nodeOutputs`).
    pub fn event_data(&self, question: &str) -> String {
        #[derive(Serialize)]
        struct Data<'a> {
            interactive: Whole<'a>,
        }
        serde_json::to_string(&Data { interactive: self.whole(question) }).unwrap_or_default()
    }

    /// The node as FastGPT's `WorkflowInteractiveResponseType`, wrappers included.
    pub fn whole_json(&self, question: &str) -> Value {
        serde_json::to_value(self.whole(question)).unwrap_or_default()
    }

    /// The deepest node's `{"type", "params"}` (newer FastGPT's public shape).
    pub fn public_json(&self) -> Value {
        serde_json::to_value(Public { kind: self.type_name(), params: self.params() }).unwrap_or_default()
    }

    fn type_name(&self) -> &'static str {
        match self.kind() {
            NodeKind::UserSelect => "userSelect",
            NodeKind::UserInput => "userInput",
        }
    }

    fn node_id(&self) -> &'static str {
        match self.kind() {
            NodeKind::UserSelect => SELECT_NODE,
            NodeKind::UserInput => FORM_NODE,
        }
    }

    fn params(&self) -> Params<'_> {
        match &self.node {
            InteractiveNode::UserSelect { description, options } => Params::Select { description, options },
            InteractiveNode::UserInput { description, fields } => Params::Input { description, fields },
        }
    }

    fn whole(&self, question: &str) -> Whole<'_> {
        let node = self.node_id();
        let mut edges =
            vec![edge(START_NODE, "right", ANSWER_NODE, "active"), edge(ANSWER_NODE, "right", node, "active")];
        match &self.node {
            InteractiveNode::UserSelect { options, .. } => {
                for (i, option) in options.iter().enumerate() {
                    edges.push(edge(node, &option.key, &format!("bRanch{i}N0de"), "waiting"));
                }
            }
            InteractiveNode::UserInput { .. } => edges.push(edge(node, "right", "fOrmD0neN0de", "waiting")),
        }
        let mut outputs = vec![output(START_NODE, "userChatInput", question)];
        if !self.text.is_empty() {
            outputs.push(output(ANSWER_NODE, "answerText", &self.text));
        }
        let inner = Whole {
            kind: self.type_name(),
            params: self.params(),
            skip_node_queue: Vec::new(),
            entry_node_ids: vec![node.to_owned()],
            memory_edges: edges,
            node_outputs: outputs,
        };
        let (kind, outer_node, params) = match self.wrapper {
            Wrapper::None => return inner,
            Wrapper::Children => {
                ("childrenInteractive", CHILD_APP_NODE, Params::Children { children_response: Box::new(inner) })
            }
            Wrapper::Loop => (
                "loopInteractive",
                LOOP_NODE,
                Params::Loop { current_index: 0, children_response: Box::new(inner), loop_result: Vec::new() },
            ),
        };
        Whole {
            kind,
            params,
            skip_node_queue: Vec::new(),
            entry_node_ids: vec![outer_node.to_owned()],
            memory_edges: vec![
                edge(START_NODE, "right", outer_node, "active"),
                edge(outer_node, "right", "aFterW0rkN0d", "waiting"),
            ],
            node_outputs: vec![output(START_NODE, "userChatInput", question)],
        }
    }

    /// `choices[0].message.content` of a non-streamed answer with `detail:
    /// true`, as JSON text in FastGPT's key order.
    pub fn content_array(&self, question: &str, style: ArrayStyle) -> String {
        let mut items = Vec::new();
        let text = (!self.text.is_empty()).then(|| json!({ "content": self.text }));
        match style {
            ArrayStyle::Legacy => {
                #[derive(Serialize)]
                struct TextItem<'a> {
                    #[serde(rename = "type")]
                    kind: &'a str,
                    text: Value,
                }
                #[derive(Serialize)]
                struct InteractiveItem<'a> {
                    #[serde(rename = "type")]
                    kind: &'a str,
                    interactive: Whole<'a>,
                }
                if let Some(text) = text {
                    items.push(serde_json::to_string(&TextItem { kind: "text", text }).unwrap_or_default());
                }
                let item = InteractiveItem { kind: "interactive", interactive: self.whole(question) };
                items.push(serde_json::to_string(&item).unwrap_or_default());
            }
            ArrayStyle::Public | ArrayStyle::Untyped => {
                let typed = style == ArrayStyle::Public;
                #[derive(Serialize)]
                struct TextItem<'a> {
                    text: Value,
                    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
                    kind: Option<&'a str>,
                }
                #[derive(Serialize)]
                struct InteractiveItem<'a> {
                    interactive: Public<'a>,
                    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
                    kind: Option<&'a str>,
                }
                if let Some(text) = text {
                    let item = TextItem { text, kind: typed.then_some("text") };
                    items.push(serde_json::to_string(&item).unwrap_or_default());
                }
                let public = Public { kind: self.type_name(), params: self.params() };
                let item = InteractiveItem { interactive: public, kind: typed.then_some("interactive") };
                items.push(serde_json::to_string(&item).unwrap_or_default());
            }
        }
        format!("[{}]", items.join(","))
    }

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

/// `RuntimeEdgeItemType`: handles as `getHandleId` names them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Edge {
    source: String,
    source_handle: String,
    target: String,
    target_handle: String,
    status: String,
}

fn edge(source: &str, handle: &str, target: &str, status: &str) -> Edge {
    Edge {
        source: source.to_owned(),
        source_handle: format!("{source}-source-{handle}"),
        target: target.to_owned(),
        target_handle: format!("{target}-target-left"),
        status: status.to_owned(),
    }
}

/// `NodeOutputItemType`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeOutput {
    node_id: String,
    key: String,
    value: String,
}

fn output(node: &str, key: &str, value: &str) -> NodeOutput {
    NodeOutput { node_id: node.to_owned(), key: key.to_owned(), value: value.to_owned() }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Params<'a> {
    Select {
        description: &'a str,
        #[serde(rename = "userSelectOptions")]
        options: &'a [SelectOption],
    },
    Input {
        description: &'a str,
        #[serde(rename = "inputForm")]
        fields: &'a [FormField],
    },
    #[serde(rename_all = "camelCase")]
    Children { children_response: Box<Whole<'a>> },
    #[serde(rename_all = "camelCase")]
    Loop { current_index: u32, children_response: Box<Whole<'a>>, loop_result: Vec<Value> },
}

/// `WorkflowInteractiveResponseType` in `handleInteractiveResult`'s key order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Whole<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    params: Params<'a>,
    skip_node_queue: Vec<Value>,
    entry_node_ids: Vec<String>,
    memory_edges: Vec<Edge>,
    node_outputs: Vec<NodeOutput>,
}

#[derive(Serialize)]
struct Public<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    params: Params<'a>,
}

/// Which app a question's hint asks for: `select:` / `app:select` and the others.
pub(super) fn app_of_hint(raw_word: &str) -> Option<(NodeKind, Wrapper)> {
    let trimmed = raw_word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let name = match trimmed.strip_prefix("app:") {
        Some(name) => name,
        None => raw_word.split_once(':').filter(|(_, rest)| !rest.contains(':')).map(|(name, _)| name)?,
    };
    let (kind, wrapper) = name.split_once('-').map_or((name, ""), |(k, w)| (k, w));
    let kind = match kind {
        "select" => NodeKind::UserSelect,
        "form" => NodeKind::UserInput,
        _ => return None,
    };
    let wrapper = match wrapper {
        "" => Wrapper::None,
        "nested" => Wrapper::Children,
        "loop" => Wrapper::Loop,
        _ => return None,
    };
    Some((kind, wrapper))
}

/// The array style a hint asks for: `array:legacy`, `array:public`, `array:untyped`.
pub(super) fn array_style_of_hint(word: &str) -> Option<ArrayStyle> {
    match word.strip_prefix("array:")? {
        "legacy" => Some(ArrayStyle::Legacy),
        "public" => Some(ArrayStyle::Public),
        "untyped" => Some(ArrayStyle::Untyped),
        _ => None,
    }
}

/// The built-in app of a hint.
pub(super) fn app(kind: NodeKind, wrapper: Wrapper) -> Interactive {
    let app = match kind {
        NodeKind::UserSelect => Interactive::select_app(),
        NodeKind::UserInput => Interactive::form_app(),
    };
    app.wrapped(wrapper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_apps() {
        assert_eq!(app_of_hint("select:"), Some((NodeKind::UserSelect, Wrapper::None)));
        assert_eq!(app_of_hint("app:select,"), Some((NodeKind::UserSelect, Wrapper::None)));
        assert_eq!(app_of_hint("form:"), Some((NodeKind::UserInput, Wrapper::None)));
        assert_eq!(app_of_hint("select-nested:"), Some((NodeKind::UserSelect, Wrapper::Children)));
        assert_eq!(app_of_hint("app:form-loop."), Some((NodeKind::UserInput, Wrapper::Loop)));
        for word in ["select", "form", "selection:", "app:", "stream:4x1s", "select-deep:", "reform:", "app:forms"] {
            assert_eq!(app_of_hint(word), None, "{word}");
        }
        assert_eq!(array_style_of_hint("array:untyped"), Some(ArrayStyle::Untyped));
        assert_eq!(array_style_of_hint("array:"), None);
    }

    #[test]
    fn the_select_event_is_fastgpts_bytes() {
        let data = Interactive::select_app().event_data("select: help me");
        let expected = concat!(
            r#"{"interactive":{"type":"userSelect","params":{"description":"Which product?","userSelectOptions":["#,
            r#"{"key":"option1","value":"Product A"},{"key":"option2","value":"Product B"},{"key":"option3","value":"产品 C"}]},"#,
            r#""skipNodeQueue":[],"entryNodeIds":["uS7e1ectN0de"],"memoryEdges":["#,
            r#"{"source":"448745","sourceHandle":"448745-source-right","target":"nZ3vKq8w2Lm1","targetHandle":"nZ3vKq8w2Lm1-target-left","status":"active"},"#,
            r#"{"source":"nZ3vKq8w2Lm1","sourceHandle":"nZ3vKq8w2Lm1-source-right","target":"uS7e1ectN0de","targetHandle":"uS7e1ectN0de-target-left","status":"active"},"#,
            r#"{"source":"uS7e1ectN0de","sourceHandle":"uS7e1ectN0de-source-option1","target":"bRanch0N0de","targetHandle":"bRanch0N0de-target-left","status":"waiting"},"#,
            r#"{"source":"uS7e1ectN0de","sourceHandle":"uS7e1ectN0de-source-option2","target":"bRanch1N0de","targetHandle":"bRanch1N0de-target-left","status":"waiting"},"#,
            r#"{"source":"uS7e1ectN0de","sourceHandle":"uS7e1ectN0de-source-option3","target":"bRanch2N0de","targetHandle":"bRanch2N0de-target-left","status":"waiting"}],"#,
            r#""nodeOutputs":[{"nodeId":"448745","key":"userChatInput","value":"select: help me"},"#,
            r#"{"nodeId":"nZ3vKq8w2Lm1","key":"answerText","value":"Let me help you choose."}]}}"#
        );
        assert_eq!(data, expected);
    }

    #[test]
    fn the_form_has_each_field_type_in_fastgpts_shape() {
        let app = Interactive::form_app();
        let whole = app.whole_json("form:");
        assert_eq!(whole["type"], "userInput");
        assert_eq!(whole["params"]["description"], "Tell us about you");
        let form = whole["params"]["inputForm"].as_array().expect("inputForm");
        let kinds: Vec<&str> = form.iter().filter_map(|f| f["type"].as_str()).collect();
        assert_eq!(kinds, ["input", "textarea", "numberInput", "select"]);
        let InteractiveNode::UserInput { fields, .. } = &app.node else { panic!("a form") };
        assert_eq!(
            serde_json::to_string(&fields[2]).expect("JSON"),
            r#"{"type":"numberInput","key":"年龄","label":"Age","value":"","valueType":"number","required":true,"max":120,"min":1}"#
        );
        assert_eq!(form[1]["key"], "备注 notes");
        assert_eq!(form[1]["required"], false);
        assert_eq!(form[3]["list"], json!([{ "label": "Sales", "value": "sales" }, { "label": "R&D", "value": "rd" }]));
        assert_eq!(form[0]["maxLength"], 50);
    }

    #[test]
    fn wrappers_hold_the_whole_child_result() {
        let nested = Interactive::select_app().wrapped(Wrapper::Children).whole_json("q");
        assert_eq!(nested["type"], "childrenInteractive");
        assert_eq!(nested["entryNodeIds"], json!([CHILD_APP_NODE]));
        let child = &nested["params"]["childrenResponse"];
        assert_eq!(child["type"], "userSelect");
        assert_eq!(child["entryNodeIds"], json!([SELECT_NODE]));
        assert_eq!(child["params"]["userSelectOptions"][2]["value"], "产品 C");

        let looped = Interactive::form_app().wrapped(Wrapper::Loop);
        let text = looped.event_data("q");
        assert!(
            text.starts_with(
                r#"{"interactive":{"type":"loopInteractive","params":{"currentIndex":0,"childrenResponse":{"type":"userInput""#
            ),
            "{text}"
        );
        assert!(text.contains(r#"]},"loopResult":[]},"skipNodeQueue":[],"entryNodeIds":["l0opN0de5x2a"]"#), "{text}");
        // The public shape is the deepest node, without the wrapper.
        assert_eq!(looped.public_json()["type"], "userInput");
        assert!(looped.public_json()["params"].get("childrenResponse").is_none());
    }

    #[test]
    fn content_arrays_in_each_style() {
        let app = Interactive::select_app().wrapped(Wrapper::Children);
        let legacy = app.content_array("q", ArrayStyle::Legacy);
        assert!(
            legacy.starts_with(
                r#"[{"type":"text","text":{"content":"Let me help you choose."}},{"type":"interactive","interactive":{"type":"childrenInteractive","params":{"childrenResponse":{"type":"userSelect""#
            ),
            "{legacy}"
        );
        let public = app.content_array("q", ArrayStyle::Public);
        assert!(
            public.starts_with(
                r#"[{"text":{"content":"Let me help you choose."},"type":"text"},{"interactive":{"type":"userSelect","params":{"description":"Which product?","userSelectOptions":[{"key":"option1","value":"Product A"}"#
            ),
            "{public}"
        );
        assert!(public.ends_with(r#"]}},"type":"interactive"}]"#), "{public}");
        let untyped: Value = serde_json::from_str(&app.content_array("q", ArrayStyle::Untyped)).expect("JSON");
        assert!(untyped[0].get("type").is_none() && untyped[1].get("type").is_none(), "{untyped}");
        assert_eq!(untyped[1]["interactive"]["params"]["description"], "Which product?");
        // No text before the node: the array holds the node alone.
        let bare = Interactive::user_select("", "Pick", &[("a", "A")]).content_array("q", ArrayStyle::Legacy);
        assert!(bare.starts_with(r#"[{"type":"interactive","interactive":{"type":"userSelect""#), "{bare}");
        let parsed: Value = serde_json::from_str(&bare).expect("JSON");
        assert_eq!(parsed.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn resumes_as_fastgpt_reads_the_next_message() {
        let select = Interactive::select_app();
        assert_eq!(select.resume_with("产品 C"), Resume::Select { key: "option3".into(), value: "产品 C".into() });
        for text in ["Product a", " Product A", "option1", ""] {
            let resume = select.resume_with(text);
            assert_eq!(resume, Resume::NotAnAnswer { node: NodeKind::UserSelect, text: text.into() });
            assert_eq!(select.resumed_answer(&resume, NotAnAnswer::SkipsBranches).as_deref(), Some(""));
            assert_eq!(select.resumed_answer(&resume, NotAnAnswer::Restarts), None);
        }
        let chosen = select.resume_with("Product B");
        assert_eq!(
            select.resumed_answer(&chosen, NotAnAnswer::SkipsBranches).as_deref(),
            Some("You chose: Product B.")
        );

        let form = Interactive::form_app();
        let resume = form.resume_with(r#"{"dept":"rd","年龄":30,"name":"Ann","备注 notes":""}"#);
        let Resume::Form { values, missing_required, unknown } = &resume else { panic!("{resume:?}") };
        assert_eq!(values.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["name", "备注 notes", "年龄", "dept"]);
        assert!(missing_required.is_empty() && unknown.is_empty());
        assert_eq!(
            form.resumed_answer(&resume, NotAnAnswer::SkipsBranches).as_deref(),
            Some("Form received: name = Ann, 备注 notes = (empty), 年龄 = 30, dept = rd.")
        );

        let partial = form.resume_with(r#"{"name":"  ","年龄":"7","extra":1,"another":true}"#);
        let Resume::Form { missing_required, unknown, .. } = &partial else { panic!("{partial:?}") };
        assert_eq!(missing_required, &["name"]);
        assert_eq!(unknown, &["another", "extra"]);
        assert_eq!(
            form.resumed_answer(&partial, NotAnAnswer::SkipsBranches).as_deref(),
            Some("Form received: name = (empty), 备注 notes = (missing), 年龄 = 7, dept = (missing).")
        );

        let not_json = form.resume_with("what is this form?");
        assert_eq!(not_json, Resume::NotAnAnswer { node: NodeKind::UserInput, text: "what is this form?".into() });
        assert_eq!(
            form.resumed_answer(&not_json, NotAnAnswer::SkipsBranches).as_deref(),
            Some("Form received: name = (missing), 备注 notes = (missing), 年龄 = (missing), dept = (missing)."),
            "FastGPT goes on with {{}}"
        );
        assert_eq!(form.resume_with("[1]"), Resume::NotAnAnswer { node: NodeKind::UserInput, text: "[1]".into() });
    }

    use crate::fake_fastgpt::{FakeAnswer, FakeFastGpt};

    async fn ask(fake: &FakeFastGpt, chat_id: &str, q: &str, stream: bool, detail: bool) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", fake.base_url()))
            .bearer_auth("k")
            .json(&json!({
                "chatId": chat_id, "stream": stream, "detail": detail,
                "messages": [{ "role": "user", "content": q }]
            }))
            .send()
            .await
            .expect("request")
    }

    async fn content(fake: &FakeFastGpt, chat_id: &str, q: &str, detail: bool) -> Value {
        let body: Value = ask(fake, chat_id, q, false, detail).await.json().await.expect("JSON");
        body["choices"][0]["message"]["content"].clone()
    }

    fn chunk(content: &str) -> String {
        format!(
            r#"{{"id":"","object":"","created":0,"model":"","choices":[{{"delta":{{"role":"assistant","content":{content}}},"index":0,"finish_reason":null}}]}}"#
        )
    }

    #[tokio::test]
    async fn a_streamed_select_ends_with_the_interactive_event() {
        let fake = FakeFastGpt::start("k").await;
        let q = "select: which one?";
        let resp = ask(&fake, "c1", q, true, true).await;
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        let expected = [
            "event: flowNodeStatus\ndata: {\"status\":\"running\",\"name\":\"AI 对话\"}\n\n".to_owned(),
            format!("event: answer\ndata: {}\n\n", chunk(r#""Let me help ""#)),
            format!("event: answer\ndata: {}\n\n", chunk(r#""you choose.""#)),
            format!("event: interactive\ndata: {}\n\n", Interactive::select_app().event_data(q)),
            "event: workflowDuration\ndata: {\"durationSeconds\":0.42}\n\n".to_owned(),
            "event: answer\ndata: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null},\"index\":0,\"finish_reason\":\"stop\"}]}\n\n".to_owned(),
            "event: answer\ndata: [DONE]\n\n".to_owned(),
            "event: flowResponses\ndata: [".to_owned(),
        ]
        .concat();
        assert!(body.starts_with(&expected), "{body}");
        let request = &fake.requests()[0];
        assert_eq!(request.answer.as_deref(), Some("Let me help you choose."));
        assert_eq!(request.interactive, Some(Interactive::select_app()));
        assert_eq!(request.resume, None);
        assert_eq!(fake.pending_interactive("c1"), Some(Interactive::select_app()));

        // Without detail the question is not written: only the text.
        let body = ask(&fake, "c2", "app:select", true, false).await.text().await.expect("body");
        assert!(!body.contains("interactive") && body.contains("you choose.") && body.ends_with("data: [DONE]\n\n"));
        assert!(fake.pending_interactive("c2").is_some(), "the node waits all the same");

        // The resume, streamed like any answer.
        let body = ask(&fake, "c1", "Product B", true, true).await.text().await.expect("body");
        assert!(body.contains(&chunk(r#""You chose: Product ""#)) && body.contains(&chunk(r#""B.""#)), "{body}");
        assert!(!body.contains("event: interactive"), "{body}");
        let request = &fake.requests()[2];
        assert_eq!(request.resume, Some(Resume::Select { key: "option2".into(), value: "Product B".into() }));
        assert_eq!(request.answer.as_deref(), Some("You chose: Product B."));
        assert_eq!(fake.pending_interactive("c1"), None);
        assert_eq!(fake.history("c1"), ["select: which one?", "Product B"]);
    }

    #[tokio::test]
    async fn not_streamed_the_content_is_fastgpts_array() {
        let fake = FakeFastGpt::start("k").await;
        let resp = ask(&fake, "c1", "form:", false, true).await;
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        let array = Interactive::form_app().content_array("form:", ArrayStyle::Legacy);
        let expected = format!(
            r#"{{"responseData":[],"newVariables":{{}},"id":"c1","model":"","usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":1}},"choices":[{{"message":{{"role":"assistant","content":{array}}},"finish_reason":"stop","index":0}}]}}"#
        );
        assert_eq!(body, expected);
        assert!(array.starts_with(r#"[{"type":"text","text":{"content":"Please fill in the form."}},{"type":"interactive","interactive":{"type":"userInput","params":{"description":"Tell us about you","inputForm":[{"type":"input","key":"name","label":"Your name","value":"","valueType":"string","required":true,"maxLength":50}"#), "{array}");

        // The form's answer: JSON keyed by the form's keys.
        let answer = content(&fake, "c1", r#"{"name":"Ann","年龄":30,"dept":"sales"}"#, true).await;
        assert_eq!(answer, "Form received: name = Ann, 备注 notes = (missing), 年龄 = 30, dept = sales.");

        // Without detail: the text alone.
        assert_eq!(content(&fake, "c2", "form:", false).await, "Please fill in the form.");
        // Other array shapes, by hint or setting.
        let public = content(&fake, "c3", "select-nested: array:public", true).await;
        assert_eq!(public[1]["type"], "interactive");
        assert_eq!(public[1]["interactive"]["type"], "userSelect", "the deepest node: {public}");
        fake.set_array_style(ArrayStyle::Untyped);
        let untyped = content(&fake, "c4", "select-loop:", true).await;
        assert!(untyped[0].get("type").is_none() && untyped[1]["interactive"]["type"] == "userSelect", "{untyped}");
        let legacy = content(&fake, "c5", "select-loop: array:legacy", true).await;
        assert_eq!(legacy[1]["interactive"]["type"], "loopInteractive");
        assert_eq!(legacy[1]["interactive"]["params"]["childrenResponse"]["type"], "userSelect");
        // The nested node resumes like the plain one.
        assert_eq!(content(&fake, "c5", "产品 C", true).await, "You chose: 产品 C.");
    }

    #[tokio::test]
    async fn other_text_skips_every_branch_or_restarts() {
        let fake = FakeFastGpt::start("k").await;
        ask(&fake, "c", "select:", false, true).await;
        // As FastGPT: the node takes the text, no branch runs, no answer.
        assert_eq!(content(&fake, "c", "what about D?", true).await, "");
        let requests = fake.requests();
        assert_eq!(
            requests[1].resume,
            Some(Resume::NotAnAnswer { node: NodeKind::UserSelect, text: "what about D?".into() })
        );
        assert_eq!(content(&fake, "c", "hello", true).await, "Echo (turn 3): hello", "the node waits no more");

        fake.set_not_an_answer(NotAnAnswer::Restarts);
        ask(&fake, "d", "select:", false, true).await;
        assert_eq!(content(&fake, "d", "hello", true).await, "Echo (turn 2): hello");
        assert!(matches!(fake.requests()[4].resume, Some(Resume::NotAnAnswer { .. })));
        ask(&fake, "d", "form:", false, true).await;
        assert_eq!(content(&fake, "d", "Product A", false).await, "Echo (turn 4): Product A", "not JSON");

        // A scripted interactive answer waits too; a scripted text takes the node.
        fake.push_responses(vec![
            FakeAnswer::user_select("", "Pick one", &[("k1", "Yes 是"), ("k2", "No")]),
            FakeAnswer::Text("scripted".into()),
        ]);
        let array = content(&fake, "e", "anything", true).await;
        assert_eq!(array[0]["interactive"]["params"]["userSelectOptions"][0]["value"], "Yes 是");
        assert_eq!(content(&fake, "e", "Yes 是", true).await, "scripted");
        let last = fake.requests().pop().expect("a request");
        assert_eq!(last.resume, Some(Resume::Select { key: "k1".into(), value: "Yes 是".into() }));
        assert_eq!(fake.pending_interactive("e"), None);
    }
}
