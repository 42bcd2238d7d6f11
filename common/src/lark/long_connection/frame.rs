//! The pbbp2 frame every binary WebSocket message of the long connection
//! carries (proto2), as `#[derive(prost::Message)]` structs written by hand:
//! no protoc and no build script, and the schema is nine fields that have not
//! changed across the SDKs.
//!
//! Proto2 `required` fields are encoded even when zero (Lark's server and the
//! SDKs expect them), `optional` ones only when set: prost keeps that
//! distinction (`required` always written, `optional` as `Option`), so a frame
//! decoded and re-encoded gives the same bytes (tested against frames the
//! official Python SDK encodes, `testdata/pbbp2/`).

use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;

/// `method` of a control frame (ping, pong).
pub const METHOD_CONTROL: i32 = 0;
/// `method` of a data frame (an event or a card action, and its ack).
pub const METHOD_DATA: i32 = 1;

pub const HEADER_TYPE: &str = "type";
pub const HEADER_MESSAGE_ID: &str = "message_id";
pub const HEADER_SUM: &str = "sum";
pub const HEADER_SEQ: &str = "seq";
pub const HEADER_TRACE_ID: &str = "trace_id";
pub const HEADER_BIZ_RT: &str = "biz_rt";

/// `Header { required string key = 1; required string value = 2; }`
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: value.into() }
    }
}

/// `Frame` of `pbbp2.proto`. Field names follow Rust; the comments give Lark's.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Frame {
    /// `SeqID`
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    /// `LogID`
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    /// `LogIDNew`
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

/// What a received frame is, from its `method` and `type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping,
    Pong,
    Event,
    Card,
    /// A method or type this client does not know: logged and ignored.
    Other,
}

impl Kind {
    /// A bounded metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Event => "event",
            Self::Card => "card",
            Self::Other => "other",
        }
    }
}

/// A frame that is not pbbp2.
#[derive(Debug, thiserror::Error)]
#[error("not a pbbp2 frame: {0}")]
pub struct DecodeError(#[from] prost::DecodeError);

/// The data frame's headers that say which event, and which part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHeaders {
    pub message_id: String,
    /// Parts of the event (1 when not split).
    pub sum: usize,
    /// This part's index, from 0.
    pub seq: usize,
    pub trace_id: Option<String>,
}

impl Frame {
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self::decode(bytes)?)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.key == key).map(|h| h.value.as_str())
    }

    pub fn kind(&self) -> Kind {
        match (self.method, self.header(HEADER_TYPE)) {
            (METHOD_CONTROL, Some("ping")) => Kind::Ping,
            (METHOD_CONTROL, Some("pong")) => Kind::Pong,
            (METHOD_DATA, Some("event")) => Kind::Event,
            (METHOD_DATA, Some("card")) => Kind::Card,
            _ => Kind::Other,
        }
    }

    /// `message_id`, `sum` and `seq` of a data frame. Missing or unparsable
    /// `sum`/`seq` mean a whole event (sum 1, seq 0), as a lone frame is.
    pub fn data_headers(&self) -> DataHeaders {
        let number = |key| self.header(key).and_then(|v| v.trim().parse::<usize>().ok());
        DataHeaders {
            message_id: self.header(HEADER_MESSAGE_ID).unwrap_or_default().to_owned(),
            sum: number(HEADER_SUM).unwrap_or(1).max(1),
            seq: number(HEADER_SEQ).unwrap_or(0),
            trace_id: self.header(HEADER_TRACE_ID).map(str::to_owned),
        }
    }

    /// The ping the client sends every `PingInterval`.
    pub fn ping(service_id: i32) -> Self {
        Self {
            seq_id: 0,
            log_id: 0,
            service: service_id,
            method: METHOD_CONTROL,
            headers: vec![Header::new(HEADER_TYPE, "ping")],
            ..Default::default()
        }
    }

    /// The acknowledgement of this data frame: the same frame (SeqID, LogID,
    /// service, method, headers) with a `biz_rt` header and the answer as
    /// payload.
    pub fn ack(&self, answer: &Answer, spent: Duration) -> Self {
        let mut headers = self.headers.clone();
        headers.push(Header::new(HEADER_BIZ_RT, spent.as_millis().to_string()));
        Self {
            seq_id: self.seq_id,
            log_id: self.log_id,
            service: self.service,
            method: self.method,
            headers,
            payload_encoding: self.payload_encoding.clone(),
            payload_type: self.payload_type.clone(),
            payload: Some(answer.to_json()),
            log_id_new: self.log_id_new.clone(),
        }
    }
}

/// The payload of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 200: handled (Lark will not push it again); 500: push it again later.
    pub code: u16,
    /// For a card action: the callback's answer JSON (sent base64-encoded).
    pub data: Option<Vec<u8>>,
}

impl Answer {
    pub const OK: Self = Self { code: 200, data: None };
    pub const RETRY: Self = Self { code: 500, data: None };

    /// `{"code": 200}` or `{"code": 200, "data": "<base64>"}`, spaced as the
    /// Python SDK writes it (Lark reads it as JSON either way).
    pub fn to_json(&self) -> Vec<u8> {
        match &self.data {
            None => format!("{{\"code\": {}}}", self.code).into_bytes(),
            Some(data) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                format!("{{\"code\": {}, \"data\": \"{b64}\"}}", self.code).into_bytes()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The codec against frames the official Python SDK encoded
    //! (`testdata/pbbp2/generate.py`, run by hand): each decodes to what the
    //! generator wrote, and encodes back to the same bytes.

    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!("{}/../testdata/pbbp2/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn round_trip(name: &str) -> Frame {
        let bytes = testdata(name);
        let frame = Frame::decode_bytes(&bytes).expect("decodes");
        assert_eq!(frame.to_bytes(), bytes, "{name} re-encodes byte for byte");
        frame
    }

    #[test]
    fn a_ping_from_the_sdk_is_ours_byte_for_byte() {
        let frame = round_trip("ping.bin");
        assert_eq!(frame.kind(), Kind::Ping);
        assert_eq!(frame, Frame::ping(33554678));
        assert_eq!(Frame::ping(33554678).to_bytes(), testdata("ping.bin"), "every required field written, even 0");
    }

    #[test]
    fn a_pong_carries_the_client_config() {
        let frame = round_trip("pong.bin");
        assert_eq!(frame.kind(), Kind::Pong);
        let config: serde_json::Value =
            serde_json::from_slice(frame.payload.as_deref().expect("payload")).expect("json");
        assert_eq!(config["PingInterval"], 90);
    }

    #[test]
    fn an_event_frame_with_all_headers() {
        let frame = round_trip("event.bin");
        assert_eq!(frame.kind(), Kind::Event);
        assert_eq!((frame.seq_id, frame.log_id, frame.service), (7, 1234567890123, 33554678));
        assert_eq!(
            frame.data_headers(),
            DataHeaders { message_id: "msg_0001".into(), sum: 1, seq: 0, trace_id: Some("trace_0001".into()) }
        );
        let event: serde_json::Value =
            serde_json::from_slice(frame.payload.as_deref().expect("payload")).expect("json");
        assert_eq!(event["schema"], "2.0");
        assert_eq!(frame.log_id_new.as_deref(), Some("log_new_0001"));
        assert_eq!(frame.payload_type.as_deref(), Some("json"));
    }

    #[test]
    fn a_fragment_says_which_part_it_is() {
        let frame = round_trip("fragment.bin");
        let h = frame.data_headers();
        assert_eq!((h.sum, h.seq, h.message_id.as_str()), (2, 1, "msg_0002"));
    }

    #[test]
    fn our_ack_is_the_sdks_ack() {
        let ack = round_trip("ack.bin");
        let event = round_trip("event.bin");
        assert_eq!(ack.header(HEADER_BIZ_RT), Some("12"));
        let ours = event.ack(&Answer::OK, Duration::from_millis(12));
        assert_eq!(ours.to_bytes(), testdata("ack.bin"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Frame::decode_bytes(&[0xff, 0xff, 0xff]).is_err());
        assert!(Frame::decode_bytes(b"{\"schema\":\"2.0\"}").is_err());
    }

    #[test]
    fn answers() {
        assert_eq!(Answer::OK.to_json(), br#"{"code": 200}"#);
        assert_eq!(Answer::RETRY.to_json(), br#"{"code": 500}"#);
        let card = Answer { code: 200, data: Some(b"{}".to_vec()) };
        let v: serde_json::Value = serde_json::from_slice(&card.to_json()).expect("json");
        assert_eq!(v, serde_json::json!({ "code": 200, "data": "e30=" }));
    }

    #[test]
    fn missing_sum_and_seq_mean_a_whole_event() {
        let f = Frame { method: METHOD_DATA, headers: vec![Header::new("type", "event")], ..Default::default() };
        assert_eq!(f.data_headers().sum, 1);
        assert_eq!(f.kind(), Kind::Event);
    }
}
