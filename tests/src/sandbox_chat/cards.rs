//! Question cards in the sandbox chat: a FastGPT user-select node shown by
//! the bridge as a card with one button per option, or a form node as a card
//! with a form.
//!
//! When the bot's reply ends with such a card (one with a button to click:
//! a `callback` button not disabled, see
//! [`crate::fake_lark::CardControls`]), the chat numbers its choices under it
//! (`Choose: 1) Product A  2) Product B ...`); typing a number (or `/choose
//! N`) clicks that button. A form is filled in at once, field by field, the
//! prompt naming the field (`(required)` when it is; a select lists its
//! options, chosen by number or text); an empty line skips an optional
//! field, `/cancel` leaves the form and `/form` starts it again. Then it is
//! submitted.
//!
//! A click goes as Lark sends it: the fake Lark (`POST
//! /_sandbox/card_action`) builds the `card.action.trigger` callback and
//! sends it to the channel's Request URL, encrypted and signed, or over the
//! long connection when the channel takes its callbacks there; it shows the
//! answer's card in place of the question, as Lark's client does. The chat
//! prints what was clicked, the toast the bridge answered, the card as it is
//! now, and the replies to the card that follow (waited for when the answer
//! came in time with HTTP 200 and a toast that is not an `error` or
//! `warning`). What Lark's client would not send (a disabled button, a card
//! still streaming, a required field left empty) is said and not sent.

use std::io::Write;

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::render::landed_in;
use super::session::Session;
use super::user::SentInfo;
use super::{render_markdown, Arrival, LarkUser};
use crate::fake_lark::card_actions::{SandboxCardAction, SANDBOX_CARD_ACTION_PATH};
use crate::fake_lark::{content_text, ButtonRef, CardControls, CardForm, ClickOutcome, SandboxMessage};

/// What a user does with a card: click a button, or submit its form with
/// these (component name, value) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardInput {
    Button(ButtonRef),
    Form(Vec<(String, String)>),
}

impl LarkUser {
    /// `operator_open_id` clicks a button of the card message `card` or
    /// submits its form, as Lark does (see the module documentation); the
    /// replies to the card are then waited for like those to a message.
    /// Fails when the fake Lark refuses (what Lark's client would not send)
    /// or cannot be reached.
    pub async fn click(
        &mut self,
        card: &SandboxMessage,
        input: CardInput,
        operator_open_id: &str,
    ) -> anyhow::Result<ClickOutcome> {
        let (button, form_values) = match input {
            CardInput::Button(b) => (Some(b), None),
            CardInput::Form(values) => (None, Some(values)),
        };
        let request = SandboxCardAction {
            url: self.target.ingress.clone(),
            encrypt_key: self.target.encrypt_key.clone(),
            verification_token: self.target.verification_token.clone(),
            message_id: card.message_id.clone(),
            operator_open_id: operator_open_id.to_owned(),
            button,
            form_values,
        };
        let lark = &self.target.lark;
        let response = self
            .http
            .post(format!("{lark}{SANDBOX_CARD_ACTION_PATH}"))
            .json(&request)
            .send()
            .await
            .with_context(|| format!("cannot reach the fake Lark at {lark}: is deploy/run-local still running?"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            bail!(
                "{}",
                body["error"].as_str().map_or_else(|| format!("the fake Lark answered {status}"), str::to_owned)
            );
        }
        let outcome: ClickOutcome = response.json().await.context("the fake Lark's answer to the click")?;
        let chat_id = card.chat_id.clone().unwrap_or_default();
        self.sent.entry(card.message_id.clone()).or_insert(SentInfo { chat_id, parts_seen: 0 });
        Ok(outcome)
    }
}

/// The buttons and forms of a message's card, when it has one to answer:
/// a callback button not disabled.
pub fn question_in(m: &SandboxMessage) -> Option<CardControls> {
    let mut controls = CardControls::of(m.card.as_ref()?);
    // The 👍 / 👎 of an answer are not a question (`/rate` clicks them).
    controls.buttons.retain(|b| !is_feedback(b));
    controls.buttons.iter().any(|b| !b.disabled).then_some(controls)
}

/// A 👍 / 👎 button of an answer.
fn is_feedback(b: &crate::fake_lark::CardButton) -> bool {
    b.value.get(common::answer::FEEDBACK_MARKER).is_some()
}

/// The feedback button of `verdict` (`good` or `bad`) on a message's card.
fn feedback_button(m: &SandboxMessage, verdict: &str) -> Option<usize> {
    let controls = CardControls::of(m.card.as_ref()?);
    controls.buttons.iter().find(|b| is_feedback(b) && b.value["v"] == verdict && !b.disabled).map(|b| b.index)
}

/// A question card of the bot.
#[derive(Clone, Debug)]
struct Question {
    message: SandboxMessage,
    controls: CardControls,
}

/// A form being filled in.
#[derive(Clone, Debug)]
struct FormFill {
    question: Question,
    form: CardForm,
    /// The next component to ask for.
    next: usize,
    values: Vec<(String, String)>,
}

impl FormFill {
    /// The next component to ask for (disabled ones are skipped).
    fn current(&self) -> Option<&crate::fake_lark::FormComponent> {
        self.form.components.iter().skip(self.next).find(|c| !c.disabled)
    }
}

/// The chat's question cards: the last one seen, the one to answer, a form
/// being filled in.
#[derive(Debug, Default)]
pub(super) struct Cards {
    /// The last message with a question card among the replies shown.
    seen: Option<SandboxMessage>,
    /// The last answer shown with 👍 / 👎 buttons (`/rate`).
    rated: Option<SandboxMessage>,
    question: Option<Question>,
    filling: Option<FormFill>,
}

impl Cards {
    /// A form is being filled in: lines are its fields' values.
    pub(super) fn filling(&self) -> bool {
        self.filling.is_some()
    }

    /// The prompt for the next field of the form being filled in.
    pub(super) fn field_prompt(&self) -> Option<String> {
        let component = self.filling.as_ref()?.current()?;
        let mut prompt = component.label.clone();
        if component.required {
            prompt.push_str(" (required)");
        }
        if !component.options.is_empty() {
            let options: Vec<String> =
                component.options.iter().enumerate().map(|(i, (text, _))| format!("{}) {text}", i + 1)).collect();
            prompt.push_str(&format!(" [{}]", options.join(" ")));
        }
        Some(prompt)
    }

    /// `line` is a number while a question card with choices waits.
    pub(super) fn is_choice(&self, line: &str) -> bool {
        self.question.as_ref().is_some_and(|q| !q.controls.choices().is_empty())
            && !line.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
    }

    /// Notes a message shown: the question card to offer once the reply is complete.
    pub(super) fn seen(&mut self, arrival: &Arrival) {
        let m = match arrival {
            Arrival::Reply { message, .. } | Arrival::Late { message, .. } | Arrival::Update { message, .. } => message,
        };
        if feedback_button(m, "good").is_some() {
            self.rated = Some(m.clone());
        }
        if question_in(m).is_some() {
            self.seen = Some(m.clone());
        } else if self.seen.as_ref().is_some_and(|s| s.index == m.index) {
            self.seen = None;
        }
    }
}

/// `1) Product A  2) Product B`: the choices, numbered.
fn numbered(controls: &CardControls) -> String {
    let choices: Vec<String> = controls
        .choices()
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}) {}{}", i + 1, b.text, if b.disabled { " (disabled)" } else { "" }))
        .collect();
    choices.join("  ")
}

impl<W: Write> Session<'_, W> {
    fn operator(&self) -> String {
        format!("ou_sandbox_{}", self.speaker)
    }

    /// Offers the question card seen last, once complete: its choices
    /// numbered, or its form to fill in. The text to print ("" for none).
    pub(super) fn offer(&mut self) -> String {
        let Some(message) = self.cards.seen.take() else { return String::new() };
        if message.streaming {
            return String::new();
        }
        let Some(controls) = question_in(&message) else { return String::new() };
        let question = Question { message, controls };
        let form = question.controls.forms.iter().find(|f| f.submit.as_ref().is_some_and(|s| !s.disabled)).cloned();
        if let Some(form) = form {
            let fields = form.components.iter().filter(|c| !c.disabled).count();
            self.cards.question = Some(question.clone());
            self.cards.filling = Some(FormFill { question, form, next: 0, values: Vec::new() });
            return format!(
                "  Form: {fields} field{}, asked one by one (an empty line skips an optional one; /cancel leaves the form).\n",
                if fields == 1 { "" } else { "s" }
            );
        }
        if question.controls.choices().is_empty() {
            return String::new();
        }
        let line = format!("  Choose: {}  (type the number, or /choose N)\n", numbered(&question.controls));
        self.cards.question = Some(question);
        line
    }

    /// `/choose N`, or `N` alone: clicks choice N of the question card.
    pub(super) async fn choose(&mut self, arg: &str) -> anyhow::Result<()> {
        let Some(question) = self.cards.question.clone().filter(|q| !q.controls.choices().is_empty()) else {
            return self.note("No question card to answer: /choose N clicks a choice of the bot's last question card.");
        };
        let choices = question.controls.choices();
        let Some(button) = arg.trim().parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| choices.get(i))
        else {
            return self.note(&format!("Choose 1 to {}: {}", choices.len(), numbered(&question.controls)));
        };
        let what = format!("{} clicked [{}]", self.speaker, button.text);
        let input = CardInput::Button(ButtonRef::Index(button.index));
        let operator = self.operator();
        let outcome = self.user.click(&question.message, input, &operator).await;
        self.answered(question, outcome, what).await
    }

    /// `/rate good` or `/rate bad`: clicks 👍 or 👎 on the bot's last answer.
    pub(super) async fn rate(&mut self, arg: &str) -> anyhow::Result<()> {
        let verdict = match arg {
            "good" | "up" | "👍" => "good",
            "bad" | "down" | "👎" => "bad",
            _ => return self.note("Usage: /rate good (👍) or /rate bad (👎): rates the bot's last answer."),
        };
        let Some(message) = self.cards.rated.clone() else {
            return self.note("No answer to rate: the bot's answers carry 👍 / 👎 (channel option feedback).");
        };
        let Some(index) = feedback_button(&message, verdict) else {
            return self.note("That answer has no such button.");
        };
        let operator = self.operator();
        let outcome = match self.user.click(&message, CardInput::Button(ButtonRef::Index(index)), &operator).await {
            Ok(outcome) => outcome,
            Err(e) => return self.note(&format!("not sent: {e:#}")),
        };
        let place = landed_in(&message);
        match (&outcome.toast, outcome.status) {
            (Some(toast), 200) => {
                let header = format!("[{place}] toast ({})>", toast.kind);
                let header = if self.options.color { format!("\x1b[1;33m{header}\x1b[22;39m") } else { header };
                writeln!(self.out, "{header} {}", toast.content)?;
                Ok(())
            }
            _ => self.note(&format!("The bridge answered HTTP {}: Lark shows the user an error.", outcome.status)),
        }
    }

    /// `/form`: fills in the last form card again.
    pub(super) fn fill_again(&mut self) -> anyhow::Result<()> {
        let question = self.cards.question.clone();
        let form = question.as_ref().and_then(|q| q.controls.forms.first().cloned());
        match (question, form) {
            (Some(question), Some(form)) => {
                self.cards.filling = Some(FormFill { question, form, next: 0, values: Vec::new() });
                Ok(())
            }
            _ => self.note("No form card to fill in."),
        }
    }

    /// One line while a form is filled in: the current field's value.
    pub(super) async fn fill(&mut self, line: &str) -> anyhow::Result<()> {
        if line == "/cancel" {
            self.cards.filling = None;
            return self.note("Form left unsent; /form fills it in again.");
        }
        let Some(fill) = self.cards.filling.as_mut() else { return Ok(()) };
        let Some(component) = fill.current().cloned() else { return Ok(()) };
        let value = line.trim();
        let value = if value.is_empty() {
            if component.required {
                return self.note(&format!("{} is required.", component.label));
            }
            String::new()
        } else if component.options.is_empty() {
            value.to_owned()
        } else {
            let by_number =
                value.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| component.options.get(i));
            let by_text = component.options.iter().find(|(t, v)| t.eq_ignore_ascii_case(value) || v == value);
            match by_number.or(by_text) {
                Some((_, v)) => v.clone(),
                None => {
                    let options: Vec<String> =
                        component.options.iter().enumerate().map(|(i, (t, _))| format!("{}) {t}", i + 1)).collect();
                    return self.note(&format!("Choose one of {}.", options.join(" ")));
                }
            }
        };
        let position = fill.form.components.iter().position(|c| c.name == component.name).unwrap_or(fill.next);
        fill.next = position + 1;
        fill.values.push((component.name.clone(), value));
        if fill.current().is_some() {
            return Ok(());
        }
        let Some(fill) = self.cards.filling.take() else { return Ok(()) };
        let shown: Vec<String> = fill
            .values
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, v)| {
                let c = fill.form.components.iter().find(|c| &c.name == name);
                let label = c.map_or(name.as_str(), |c| c.label.as_str());
                let text = c.and_then(|c| c.options.iter().find(|(_, o)| o == v)).map_or(v.as_str(), |(t, _)| t);
                format!("{label} = {text}")
            })
            .collect();
        let what = format!("{} submitted the form: {}", self.speaker, shown.join(", "));
        let values = fill.values.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let operator = self.operator();
        let outcome = self.user.click(&fill.question.message, CardInput::Form(values), &operator).await;
        self.answered(fill.question, outcome, what).await
    }

    /// What came of a click or a submit: the toast, the card now, the replies.
    async fn answered(
        &mut self,
        question: Question,
        outcome: anyhow::Result<ClickOutcome>,
        what: String,
    ) -> anyhow::Result<()> {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return self.note(&format!("not sent: {e:#}")),
        };
        let place = landed_in(&question.message);
        self.note(&format!("[{place}] {what}"))?;
        if outcome.status == 0 {
            return self.note("No answer from the bridge: Lark shows the user an error.");
        }
        if !outcome.in_time {
            let secs = outcome.elapsed().as_secs_f64();
            return self.note(&format!(
                "The bridge answered after {secs:.1} s, past Lark's 3 s: Lark shows the user an error and drops the answer."
            ));
        }
        if outcome.status != 200 {
            let body = outcome.raw_body.trim();
            return self
                .note(&format!("The bridge answered HTTP {}: Lark shows the user an error. {body}", outcome.status));
        }
        if let Some(toast) = &outcome.toast {
            let header = format!("[{place}] toast ({})>", toast.kind);
            let header = if self.options.color { format!("\x1b[1;33m{header}\x1b[22;39m") } else { header };
            writeln!(self.out, "{header} {}", toast.content)?;
        }
        if let (true, Some(card)) = (outcome.card_applied, &outcome.card) {
            let mut updated = question.message.clone();
            updated.card = Some(card.clone());
            let header = self.header(&updated, &["card".to_owned(), "updated".to_owned()]);
            writeln!(self.out, "{header}")?;
            for line in render_markdown(&content_text("interactive", card), self.options.color).lines() {
                if !line.is_empty() {
                    write!(self.out, "  {line}")?;
                }
                writeln!(self.out)?;
            }
            self.cards.question = question_in(&updated).map(|controls| Question { message: updated, controls });
        }
        self.out.flush()?;
        let refused = outcome.toast.as_ref().is_some_and(|t| matches!(t.kind.as_str(), "error" | "warning"));
        if refused {
            return Ok(());
        }
        self.asked.insert(question.message.message_id.clone(), what.clone());
        if self.show_replies(&question.message.message_id).await? == 0 {
            let secs = self.options.timing.timeout.as_secs_f64();
            self.note(&format!("no reply to the click within {secs} s: check .sandbox/logs/*.log"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::super::{run, ChatOptions, Target, Timing};
    use crate::fake_lark::server::ServerHandle;
    use crate::fake_lark::tenant_token;
    use crate::fake_lark::{FakeApp, FakeLark};

    const KEY: &str = "stand-in key";

    fn text(t: &str) -> serde_json::Value {
        json!({ "tag": "plain_text", "content": t })
    }

    fn select_card(disabled: bool, chosen: Option<&str>) -> serde_json::Value {
        let button = |t: &str| {
            json!({ "tag": "button", "text": text(t), "type": "default", "disabled": disabled,
                "behaviors": [{ "type": "callback", "value": { "choice": t } }] })
        };
        let description = match chosen {
            Some(c) => format!("Which product?\n\n**{c}**"),
            None => "Which product?".to_owned(),
        };
        json!({ "schema": "2.0", "body": { "elements": [
            { "tag": "markdown", "content": description },
            button("Product A"), button("Product B"), button("产品 C")
        ] } })
    }

    fn form_card() -> serde_json::Value {
        json!({ "schema": "2.0", "body": { "elements": [
            { "tag": "markdown", "content": "Tell us about you" },
            { "tag": "form", "name": "form_1", "elements": [
                { "tag": "input", "name": "f0", "label": text("Your name"), "required": true },
                { "tag": "input", "name": "f1", "label": text("Notes"), "input_type": "multiline_text" },
                { "tag": "input", "name": "f2", "label": text("Age"), "required": true },
                { "tag": "select_static", "name": "f3", "placeholder": text("Department"),
                  "options": [{ "text": text("Sales"), "value": "s" }, { "text": text("R&D"), "value": "r" }] },
                { "tag": "button", "name": "submit", "text": text("Submit"), "form_action_type": "submit",
                  "behaviors": [{ "type": "callback", "value": { "form": "form_1" } }] }
            ] }
        ] } })
    }

    /// The bot's side: replies to a message (in `msg_type`, `content`).
    async fn bot_reply(lark: String, to: String, msg_type: &'static str, content: serde_json::Value) {
        let client = reqwest::Client::new();
        let token = tenant_token(&client, &lark, "cli_s", "secret").await;
        let body = json!({ "msg_type": msg_type, "content": content.to_string() });
        let reply: serde_json::Value = client
            .post(format!("{lark}/open-apis/im/v1/messages/{to}/reply"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("reply")
            .json()
            .await
            .expect("JSON");
        assert_eq!(reply["code"], 0, "{reply}");
    }

    /// A stand-in for the bridge at a Request URL: question cards for
    /// `select:` and `form:`, an echo otherwise; a click answered with a
    /// toast (and the card with its buttons disabled), then a reply to the card.
    async fn stand_in_bridge(lark: String) -> (String, ServerHandle) {
        let key = common::lark::crypto::EncryptKey::new(secrecy::SecretString::from(KEY.to_owned()));
        let router = axum::Router::new().route(
            "/lark/s/events",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (key, lark) = (key.clone(), lark.clone());
                async move {
                    let wrapper: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                    let plain = key.decrypt(wrapper["encrypt"].as_str().expect("encrypted")).expect("decrypts");
                    let callback: serde_json::Value = serde_json::from_slice(&plain).expect("JSON");
                    assert_eq!(callback["header"]["token"], "tok");
                    let event = &callback["event"];
                    if callback["header"]["event_type"] == "card.action.trigger" {
                        let card_message = event["context"]["open_message_id"].as_str().expect("message").to_owned();
                        if let Some(form) = event["action"].get("form_value") {
                            let reply = json!({ "text": format!("Form received: {form}") });
                            tokio::spawn(bot_reply(lark, card_message, "text", reply));
                            return json!({ "toast": { "type": "info", "content": "Sent" } }).to_string();
                        }
                        let choice = event["action"]["value"]["choice"].as_str().expect("a choice").to_owned();
                        if event["operator"]["open_id"] != "ou_sandbox_you" {
                            return json!({ "toast": { "type": "error", "content": "Not your question" } }).to_string();
                        }
                        let reply = json!({ "text": format!("You chose: {choice}.") });
                        tokio::spawn(bot_reply(lark, card_message, "text", reply));
                        let card = select_card(true, Some(&choice));
                        let toast = json!({ "type": "info", "content": format!("You chose {choice}") });
                        return json!({ "toast": toast, "card": { "type": "raw", "data": card } }).to_string();
                    }
                    let message = event["message"]["message_id"].as_str().expect("a message").to_owned();
                    let content: serde_json::Value =
                        serde_json::from_str(event["message"]["content"].as_str().expect("content")).expect("JSON");
                    let question = content["text"].as_str().unwrap_or_default().to_owned();
                    if question.contains("select:") {
                        tokio::spawn(bot_reply(lark, message, "interactive", select_card(false, None)));
                    } else if question.contains("form:") {
                        tokio::spawn(bot_reply(lark, message, "interactive", form_card()));
                    } else {
                        tokio::spawn(bot_reply(lark, message, "text", json!({ "text": format!("Echo: {question}") })));
                    }
                    "{}".to_owned()
                }
            }),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = ServerHandle::spawn(addr, router, CancellationToken::new()).await.expect("bind");
        (format!("http://{}/lark/s/events", server.addr()), server)
    }

    #[tokio::test]
    async fn a_question_is_answered_by_number_and_a_form_field_by_field() {
        let lark = FakeLark::start(vec![FakeApp::new("cli_s", "secret", "ou_b").with_verification_token("tok")]).await;
        lark.set_chat_rate_limit(None);
        let (ingress, _bridge) = stand_in_bridge(lark.base_url()).await;
        let target = Target {
            ingress,
            lark: lark.base_url(),
            encrypt_key: Some(KEY.to_owned()),
            verification_token: Some("tok".to_owned()),
            app_id: "cli_s".to_owned(),
            bot_open_id: "ou_b".to_owned(),
        };
        let timing = Timing {
            timeout: Duration::from_secs(5),
            quiet: Duration::from_millis(150),
            poll: Duration::from_millis(10),
        };
        let options = ChatOptions { timing, echo_input: true, color: false };
        let script = "/choose 1\nselect: which?\n/as bob\n1\n/as you\n7\n2\n1\nform: please\n\nAnn\n\n30\n3\nR&D\n/form\n/cancel\n5\n/quit\n";
        let mut printed = Vec::new();
        run(target, options, script.as_bytes(), &mut printed).await.expect("the chat runs");
        let out = String::from_utf8(printed).expect("UTF-8");
        println!("{out}");
        let expected = "\
[private] you> /choose 1
No question card to answer: /choose N clicks a choice of the bot's last question card.
[private] you> select: which?
[private] bot (card)>
  Which product?
  [Product A]
  [Product B]
  [产品 C]
  Choose: 1) Product A  2) Product B  3) 产品 C  (type the number, or /choose N)
[private] you> /as bob
You now speak as bob (in their own private chat with the bot).
[private] bob> 1
[private] bob clicked [Product A]
[private] toast (error)> Not your question
[private] bob> /as you
You now speak as you (in their own private chat with the bot).
[private] you> 7
Choose 1 to 3: 1) Product A  2) Product B  3) 产品 C
[private] you> 2
[private] you clicked [Product B]
[private] toast (info)> You chose Product B
[private] bot (card, updated)>
  Which product?

  **Product B**
  [Product A] (disabled)
  [Product B] (disabled)
  [产品 C] (disabled)
[private] bot> You chose: Product B.
[private] you> 1
";
        assert!(out.contains(expected), "{out}");
        // With no question waiting, a number is a message.
        assert!(out.contains("[private] you> 1\n[private] bot> Echo: 1\n"), "{out}");

        let expected = "\
[private] you> form: please
[private] bot (card)>
  Tell us about you
  Your name (required): ____
  Notes: ____
  Age (required): ____
  Department: ▾ Sales | R&D
  [Submit]
  Form: 4 fields, asked one by one (an empty line skips an optional one; /cancel leaves the form).
[private] Your name (required)> 
Your name is required.
[private] Your name (required)> Ann
[private] Notes> 
[private] Age (required)> 30
[private] Department [1) Sales 2) R&D]> 3
Choose one of 1) Sales 2) R&D.
[private] Department [1) Sales 2) R&D]> R&D
[private] you submitted the form: Your name = Ann, Age = 30, Department = R&D
[private] toast (info)> Sent
[private] bot> Form received: {\"f0\":\"Ann\",\"f2\":\"30\",\"f3\":\"r\"}
[private] you> /form
[private] Your name (required)> /cancel
Form left unsent; /form fills it in again.
[private] you> 5
[private] bot> Echo: 5
[private] you> /quit
bye
";
        assert!(out.contains(expected), "{out}");
        let clicks = lark.card_actions();
        assert_eq!(clicks.len(), 3, "bob's click, yours, the form");
        assert_eq!(clicks[0].callback["event"]["operator"]["open_id"], "ou_sandbox_bob");
        assert!(clicks.iter().all(|c| c.status == 200 && c.in_time));
    }
}
