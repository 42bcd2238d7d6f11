#!/usr/bin/env python3
"""Writes the long-connection frames of this folder (*.bin), run by hand when
they need to change (the tests only read the .bin files):

    python3 testdata/real/long_connection/generate.py

pbbp2 is encoded here by hand (no SDK needed): proto2, the required fields
SeqID, LogID, service and method always written, then the headers, then the
optional fields that are set. That is what Lark's server sends and the
official SDKs decode (Go `ws/pbbp2.pb.go`, Python `lark_oapi/ws/pb/
pbbp2_pb2.py`, Node `ws-client/proto-buf/pbbp2.js`); the frames in
testdata/pbbp2/, encoded by the Python SDK itself, fix the byte layout.

Each data frame's payload is an event or card callback of this corpus
(../events/, ../card_actions/), byte for byte as the file holds it; the
headers are the ones the SDKs read (type, message_id, sum, seq, trace_id).
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE_ID = 33554678


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, wire, value):
    key = varint((tag << 3) | wire)
    if wire == 0:
        return key + varint(value)
    return key + varint(len(value)) + value


def frame(seq_id, log_id, method, headers, payload=None, payload_type=None, log_id_new=None):
    out = field(1, 0, seq_id) + field(2, 0, log_id) + field(3, 0, SERVICE_ID) + field(4, 0, method)
    for k, v in headers:
        out += field(5, 2, field(1, 2, k.encode()) + field(2, 2, v.encode()))
    if payload_type is not None:
        out += field(7, 2, payload_type.encode())
    if payload is not None:
        out += field(8, 2, payload)
    if log_id_new is not None:
        out += field(9, 2, log_id_new.encode())
    return out


def corpus(path):
    with open(os.path.join(HERE, "..", path), "rb") as f:
        return f.read()


def data(kind, message_id, payload, seq_id, sum_=1, seq=0):
    headers = [("type", kind), ("message_id", message_id), ("sum", str(sum_)), ("seq", str(seq)),
               ("trace_id", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6")]
    return frame(seq_id, 7449302761298231322, 1, headers, payload, "json", "02173321234567800000000000000000000ffff0a8c1e3b")


FRAMES = {
    "ping.bin": frame(0, 0, 0, [("type", "ping")]),
    "pong.bin": frame(0, 0, 0, [("type", "pong")], json.dumps(
        {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120},
        separators=(",", ":")).encode()),
    "event_p2p_user_id_null.bin": data("event", "7449302761298231323", corpus("events/ws_p2p_user_id_null.json"), 1),
    "event_mention_bot_user_id_empty.bin": data(
        "event", "7449302761298231324", corpus("events/ws_group_mention_bot_user_id_empty.json"), 2),
    "event_card_action_trigger.bin": data("event", "7449302761298231326", corpus("card_actions/ws_card_action_trigger.json"), 4),
    "card_question_click.bin": data("card", "7449302761298231327", corpus("card_actions/ws_question_card_click.json"), 5),
}

# An event split over two frames (Lark splits large ones): sum 2, seq 0 and 1.
split = corpus("events/ws_group_root_id_null.json")
half = len(split) // 2
FRAMES["event_split_root_id_null.part0.bin"] = data("event", "7449302761298231325", split[:half], 3, 2, 0)
FRAMES["event_split_root_id_null.part1.bin"] = data("event", "7449302761298231325", split[half:], 3, 2, 1)

for name, content in FRAMES.items():
    with open(os.path.join(HERE, name), "wb") as out:
        out.write(content)
    print("wrote", name)
