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
//!
//! The code: this file is the node ([`Interactive`] and its parts), the
//! built-in apps and the hints that name them; `fields.rs` is what a node
//! asks (a user-select's options, a form's fields), `shapes.rs` how a node
//! is written (the `event: interactive` data, the content array),
//! `resume.rs` what the node makes of the next message, `tests.rs` the
//! tests.

use serde_json::Value;

mod fields;
mod resume;
mod shapes;
#[cfg(test)]
mod tests;

pub use fields::{FormField, ListItem, SelectOption};
pub use resume::form_received;

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
