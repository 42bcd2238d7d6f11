//! How the node is written, byte for byte as FastGPT writes it: the
//! `event: interactive` data (`handleInteractiveResult`'s whole result, the
//! wrappers of a child app or a loop included, with the fake app's node
//! ids, the run's edges and outputs) and a non-streamed answer's content
//! array in each [`ArrayStyle`]. The sources are in the module
//! documentation.

use serde::Serialize;
use serde_json::{json, Value};

use super::{ArrayStyle, FormField, Interactive, InteractiveNode, NodeKind, SelectOption, Wrapper};

/// The workflow start node's id in FastGPT apps.
const START_NODE: &str = "448745";
/// The node that wrote the answer text before the question.
const ANSWER_NODE: &str = "nZ3vKq8w2Lm1";
pub(super) const SELECT_NODE: &str = "uS7e1ectN0de";
const FORM_NODE: &str = "fO7rmInputNd";
/// The app (plugin) node a nested question runs in.
pub(super) const CHILD_APP_NODE: &str = "cH1ldApp0Nd3";
const LOOP_NODE: &str = "l0opN0de5x2a";

impl Interactive {
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
