# shellcheck shell=bash
# deploy/bench/lib.sh: what the benchmark scripts share (sourced by
# deploy/bench/run and deploy/bench/instructions): the benchmark channel's
# app and keys, the ports of a run, and the services' configuration file.
# Needs deploy/lib/nats.sh sourced first (NATS_DEFAULT_URL).

# set_ports BASE: the seven ports of a run, BASE..BASE+6 on 127.0.0.1.
# shellcheck disable=SC2034 # used by the scripts that source this file
set_ports() {
    P_INGRESS=$1
    P_RELAY=$(($1 + 1))
    P_RESPONDER=$(($1 + 2))
    P_FLOOR=$(($1 + 3))
    P_NODE=$(($1 + 4))
    P_LARK=$(($1 + 5))
    P_FASTGPT=$(($1 + 6))
}

# The benchmark channel: loadgen's defaults are the same values.
# shellcheck disable=SC2034 # used by the scripts that source this file
CHANNEL=bench
APP_ID=cli_bench
APP_SECRET=bench-app-secret
ENCRYPT_KEY=bench-encrypt-key
TOKEN=bench-verification-token
BOT_OPEN_ID=ou_bench_bot
FASTGPT_KEY=fastgpt-bench-key
EVENTS_PATH=/lark/$CHANNEL/events

# write_config FILE NAMESPACE [STREAMING]: the three services' configuration
# for a run on the ports of set_ports; STREAMING (true or false) sets the
# channel's `streaming` (absent: the services' default, true).
write_config() {
    local file=$1 ns=$2 streaming=${3:-}
    cat >"$file" <<EOF
# Written by deploy/bench: the benchmark's own namespace, fake Lark and
# FastGPT on loopback (started by loadgen e2e), production log settings.
[nats]
url = "$NATS_DEFAULT_URL"
namespace = "$ns"

[ingress]
listen = "127.0.0.1:$P_INGRESS"

[relay]
listen = "127.0.0.1:$P_RELAY"
shutdown_grace_secs = 2

[responder]
listen = "127.0.0.1:$P_RESPONDER"
shutdown_grace_secs = 2
# Lark allows one app 50 messages per second; the benchmark's fake Lark does
# not limit, and 200 msg/s end to end must not wait on this replica's pacing.
app_per_second = 1000
app_per_minute = 100000

[telemetry]
log_format = "json"
log_level = "info"

[[channels]]
id = "$CHANNEL"
app_id = "$APP_ID"
app_secret = "$APP_SECRET"
encrypt_key = "$ENCRYPT_KEY"
verification_token = "$TOKEN"
lark_base_url = "http://127.0.0.1:$P_LARK"
fastgpt_base_url = "http://127.0.0.1:$P_FASTGPT/api"
fastgpt_api_key = "$FASTGPT_KEY"
EOF
    if [[ -n $streaming ]]; then
        echo "streaming = $streaming" >>"$file"
    fi
}
