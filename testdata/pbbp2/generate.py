#!/usr/bin/env python3
"""Writes pbbp2 frames encoded by Lark's official Python SDK, for the Rust
codec's tests (common/src/lark/long_connection/frame.rs): each .bin file must
decode and re-encode byte for byte.

Run by hand, not by the test suite, when the frames need to change:

    pip install lark-oapi          # the SDK's pbbp2_pb2 (lark_oapi/ws/pb/)
    python3 testdata/pbbp2/generate.py

The frames are built the way lark_oapi/ws/client.py builds them: the ping as
_new_ping_frame does, the ack as _handle_data_frame does (biz_rt header added
to the received frame's headers, payload JSON.marshal(Response(code=200))).
The pong and event frames stand for what Lark's server sends.
"""

import json
import os

from lark_oapi.core.json import JSON
from lark_oapi.ws.model import Response
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE_ID = 33554678


def header(frame, key, value):
    h = frame.headers.add()
    h.key = key
    h.value = value


def ping():
    # lark_oapi/ws/client.py _new_ping_frame
    f = Frame()
    header(f, "type", "ping")
    f.service = SERVICE_ID
    f.method = 0
    f.SeqID = 0
    f.LogID = 0
    return f


def pong():
    f = Frame()
    header(f, "type", "pong")
    f.service = SERVICE_ID
    f.method = 0
    f.SeqID = 0
    f.LogID = 0
    f.payload = json.dumps(
        {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 90},
        separators=(",", ":"),
    ).encode()
    return f


EVENT = {
    "schema": "2.0",
    "header": {
        "event_id": "5e3702a84e847582be8db7fb73283c02",
        "event_type": "im.message.receive_v1",
        "create_time": "1608725989000",
        "token": "",
        "app_id": "cli_a1b2c3d4e5f6",
        "tenant_key": "2ca1d211f64f6438",
    },
    "event": {
        "sender": {"sender_id": {"open_id": "ou_84aad35d084aa403a838cf73ee18467"}, "sender_type": "user"},
        "message": {
            "message_id": "om_5ce6d572455d361153b7cb51da133945",
            "chat_id": "oc_5ce6d572455d361153b7cb51da133945",
            "chat_type": "p2p",
            "message_type": "text",
            "content": "{\"text\":\"hello\"}",
        },
    },
}


def event():
    f = Frame()
    f.SeqID = 7
    f.LogID = 1234567890123
    f.service = SERVICE_ID
    f.method = 1
    header(f, "type", "event")
    header(f, "message_id", "msg_0001")
    header(f, "sum", "1")
    header(f, "seq", "0")
    header(f, "trace_id", "trace_0001")
    f.payload_type = "json"
    f.payload = json.dumps(EVENT, separators=(",", ":")).encode()
    f.LogIDNew = "log_new_0001"
    return f


def fragment():
    whole = json.dumps(EVENT, separators=(",", ":")).encode()
    f = Frame()
    f.SeqID = 8
    f.LogID = 1234567890124
    f.service = SERVICE_ID
    f.method = 1
    header(f, "type", "event")
    header(f, "message_id", "msg_0002")
    header(f, "sum", "2")
    header(f, "seq", "1")
    header(f, "trace_id", "trace_0002")
    f.payload = whole[len(whole) // 2:]
    return f


def ack():
    # lark_oapi/ws/client.py _handle_data_frame, after a handled event
    f = event()
    header(f, "biz_rt", "12")
    f.payload = JSON.marshal(Response(code=200)).encode("utf-8")
    return f


for name, frame in [("ping", ping()), ("pong", pong()), ("event", event()), ("fragment", fragment()), ("ack", ack())]:
    with open(os.path.join(HERE, name + ".bin"), "wb") as out:
        out.write(frame.SerializeToString())
    print("wrote", name + ".bin")
