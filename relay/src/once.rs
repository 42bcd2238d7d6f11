//! Each question runs FastGPT's workflow once, however often it is asked.
//!
//! A redelivered event (a relay killed mid-answer, a reply whose publish or
//! record failed in a NATS outage) asks FastGPT again. Every ask carries a
//! `responseChatItemId` derived from what the user did ([`data_id`]: the Lark
//! message, or the click), the same on every retry, replica and restart.
//! FastGPT 4.15+ stores that dataId with the turn before its workflow runs
//! and refuses it a second time ([`FastGptError::Duplicate`]); the relay then
//! reads the stored answer ([`FastGpt::stored_answer`]) instead of running
//! the workflow twice. Older FastGPT ignores the field: as before, the
//! question runs again.
//!
//! FastGPT's side (labring/FastGPT): `preChatRound` checks
//! `chatIsGenerating` first, then the dataId
//! (`packages/service/core/chat/dataIdValidation.ts`), so a duplicate is
//! refused only once the earlier run has stopped; the records come from
//! `projects/app/src/pages/api/core/chat/record/getPaginationRecords.ts`, the
//! chat's status from `.../chat/history/getHistoryStatus.ts` and the app id
//! an app key implies from `.../chat/init.ts`. The records and status APIs
//! find nothing without `appId`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::channel::Channel;
use common::conversation::short_hash;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::fastgpt::{api_key, classify_json, FastGpt, FastGptError, Refusal};

/// The `responseChatItemId` of the turn that answers `source` (the event's
/// de-duplication key: the Lark message, or the click on a question card).
pub fn data_id(source: &str) -> String {
    format!("lb-{}", short_hash(&[source.as_bytes()]))
}

/// Records read per page, and the most pages read looking for one dataId.
const PAGE_SIZE: u64 = 30;
const MAX_PAGES: u64 = 10;
/// Between two looks at a chat that is still generating.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// The largest API answer read (records carry whole answers).
const MAX_API_BODY: usize = 8 << 20;

/// The FastGPT app id of each channel, once learned from `init`.
#[derive(Clone, Default)]
pub struct AppIds(Arc<Mutex<HashMap<String, String>>>);

impl AppIds {
    fn get(&self, channel: &str) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(channel).cloned()
    }

    fn put(&self, channel: &str, app_id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(channel.to_owned(), app_id.to_owned());
    }
}

/// What the stored turn says.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The AI item's text.
    Answer(String),
    /// The run failed (`errorMsg` on the AI item).
    Failed(String),
}

impl FastGpt {
    /// The answer FastGPT stored for `data_id` in `chat_id`: waits while the
    /// chat is generating, within `relay.fastgpt_timeout_secs`. A missing
    /// item or a chat still generating at the deadline is transient (the
    /// event is retried); a failed run is [`FastGptError::Workflow`].
    pub async fn stored_answer(&self, channel: &Channel, chat_id: &str, data_id: &str) -> Result<String, FastGptError> {
        let deadline = Instant::now() + self.timeout;
        let app_id = self.app_id(channel, chat_id).await?;
        loop {
            let generating = self.generating(channel, &app_id, chat_id).await?;
            if !generating {
                break;
            }
            if Instant::now() + POLL_EVERY > deadline {
                return Err(FastGptError::Transient(format!(
                    "the chat was still generating after {}s (relay.fastgpt_timeout_secs)",
                    self.timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        match self.find_item(channel, &app_id, chat_id, data_id).await? {
            Some(Stored::Answer(text)) => Ok(text),
            Some(Stored::Failed(error)) => Err(FastGptError::Workflow(error)),
            None => Err(FastGptError::Transient(format!("FastGPT refused dataId {data_id} but has no such AI item"))),
        }
    }

    /// The channel's `fastgpt_app_id`, or the app its key implies (`init`'s
    /// `data.appId`), learned once.
    pub async fn app_id(&self, channel: &Channel, chat_id: &str) -> Result<String, FastGptError> {
        if let Some(id) = &channel.fastgpt_app_id {
            return Ok(id.clone());
        }
        if let Some(id) = self.app_ids.get(&channel.id) {
            return Ok(id);
        }
        let data = self.init(channel, chat_id).await?;
        let id = data.get("appId").and_then(Value::as_str).filter(|id| !id.is_empty() && id.len() <= 64);
        let Some(id) = id else {
            return Err(refused("init named no appId: set fastgpt_app_id"));
        };
        self.app_ids.put(&channel.id, id);
        Ok(id.to_owned())
    }

    /// `GET core/chat/init?appId=&chatId=`: the app's chat settings (its
    /// welcome text) and, with an app key, the app's id. Returns `data`.
    pub async fn init(&self, channel: &Channel, chat_id: &str) -> Result<Value, FastGptError> {
        let mut query = vec![("chatId", chat_id.to_owned())];
        if let Some(id) = &channel.fastgpt_app_id {
            query.push(("appId", id.clone()));
        }
        let key = api_key(channel)?;
        let request =
            self.http.get(channel.fastgpt_url("core/chat/init")).query(&query).bearer_auth(key.expose_secret());
        self.api(request).await
    }

    /// `POST core/chat/history/getHistoryStatus`: whether the chat is generating.
    async fn generating(&self, channel: &Channel, app_id: &str, chat_id: &str) -> Result<bool, FastGptError> {
        let body = json!({ "appId": app_id, "chatIds": [chat_id] });
        let data = self.post(channel, "core/chat/history/getHistoryStatus", &body).await?;
        let list = data.get("list").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(list.iter().any(|c| {
            c.get("chatId").and_then(Value::as_str) == Some(chat_id)
                && c.get("chatGenerateStatus").and_then(Value::as_str) == Some("generating")
        }))
    }

    /// Pages through `core/chat/record/getPaginationRecords` for the AI item
    /// with `data_id` (the human item of the turn shares it).
    async fn find_item(
        &self,
        channel: &Channel,
        app_id: &str,
        chat_id: &str,
        data_id: &str,
    ) -> Result<Option<Stored>, FastGptError> {
        for page in 0..MAX_PAGES {
            let body = json!({ "appId": app_id, "chatId": chat_id, "offset": page * PAGE_SIZE, "pageSize": PAGE_SIZE });
            let data = self.post(channel, "core/chat/record/getPaginationRecords", &body).await?;
            let list = data.get("list").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(item) = list.iter().find(|i| {
                i.get("dataId").and_then(Value::as_str) == Some(data_id)
                    && i.get("obj").and_then(Value::as_str) == Some("AI")
            }) {
                return Ok(Some(read_item(item)));
            }
            let total = data.get("total").and_then(Value::as_u64).unwrap_or(0);
            if list.len() < PAGE_SIZE as usize || (page + 1) * PAGE_SIZE >= total {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// POSTs `body` to `{fastgpt_base_url}/{path}` with the channel's key; returns `data`.
    pub(crate) async fn post(&self, channel: &Channel, path: &str, body: &Value) -> Result<Value, FastGptError> {
        let key = api_key(channel)?;
        self.api(self.http.post(channel.fastgpt_url(path)).bearer_auth(key.expose_secret()).json(body)).await
    }

    /// One call of FastGPT's `jsonRes` APIs: `{code, statusText, message, data}`.
    async fn api(&self, request: reqwest::RequestBuilder) -> Result<Value, FastGptError> {
        let resp = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| FastGptError::Transient(crate::fastgpt::network_error(&e, self.timeout)))?;
        let status = resp.status().as_u16();
        let bytes = crate::fastgpt::stream::read_bounded(resp, MAX_API_BODY, self.timeout).await?;
        classify_json(status, &bytes)
    }
}

/// The text of an AI item (`value[].text.content`), or its `errorMsg`.
pub fn read_item(item: &Value) -> Stored {
    if let Some(error) = item.get("errorMsg").and_then(Value::as_str).filter(|e| !e.trim().is_empty()) {
        return Stored::Failed(error.to_owned());
    }
    let text = item
        .get("value")
        .and_then(Value::as_array)
        .map(|parts| {
            parts.iter().filter_map(|p| p.pointer("/text/content").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        })
        .unwrap_or_default();
    Stored::Answer(text)
}

fn refused(message: &str) -> FastGptError {
    FastGptError::Refused { cause: Refusal::Other, http_status: 0, status_text: String::new(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_id_is_stable_and_short() {
        assert_eq!(data_id("support:msg:om_1"), data_id("support:msg:om_1"));
        assert_ne!(data_id("support:msg:om_1"), data_id("support:msg:om_2"));
        assert_eq!(data_id("x").len(), 19);
    }

    #[test]
    fn an_ai_item_reads_as_its_text_or_its_error() {
        let item =
            json!({"dataId":"d","obj":"AI","value":[{"text":{"content":"Hello "}},{"text":{"content":"there"}}]});
        assert_eq!(read_item(&item), Stored::Answer("Hello there".into()));
        let failed = json!({"dataId":"d","obj":"AI","value":[],"errorMsg":"model timed out"});
        assert_eq!(read_item(&failed), Stored::Failed("model timed out".into()));
    }
}
