//! `--check` of each binary against the fakes: the checklist names what is
//! wrong and how to fix it, and the exit code is 0 only when all passed.

use lark_bridge_tests::fake_fastgpt::FakeFastGpt;
use lark_bridge_tests::fake_lark::{Endpoint, Failure, FakeApp, FakeLark};
use lark_bridge_tests::harness::{
    config_toml, delete_namespace, nats_url, APP_ID, APP_SECRET, BOT_OPEN_ID, FASTGPT_KEY,
};
use lark_bridge_tests::lark_events::random_hex;

struct Fakes {
    ns: String,
    lark: FakeLark,
    fastgpt: FakeFastGpt,
    config: tempfile::NamedTempFile,
}

async fn fakes() -> Fakes {
    let lark = FakeLark::start(vec![FakeApp::new(APP_ID, APP_SECRET, BOT_OPEN_ID)]).await;
    let fastgpt = FakeFastGpt::start(FASTGPT_KEY).await;
    let ns = format!("c{}", random_hex(8));
    let toml = config_toml(&nats_url(), &ns, &lark.base_url(), &fastgpt.base_url(), true);
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), toml).expect("config");
    Fakes { ns, lark, fastgpt, config }
}

impl Fakes {
    /// Deletes the streams `--check` created in this test's namespace.
    async fn cleanup(self) {
        let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
        let settings =
            common::config::NatsSettings { url: nats_url(), namespace: self.ns.clone(), ..Default::default() };
        delete_namespace(&js, &common::topology::Topology::new(&settings)).await;
    }
}

/// Runs `binary --check` and returns (exit code, stdout).
async fn check(f: &Fakes, binary: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--config").arg(f.config.path()).arg("--check");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

const INGRESS: &str = env!("CARGO_BIN_EXE_lb-ingress");
const RELAY: &str = env!("CARGO_BIN_EXE_lb-relay");
const RESPONDER: &str = env!("CARGO_BIN_EXE_lb-responder");

#[tokio::test]
async fn every_check_passes_when_all_is_well() {
    let f = fakes().await;
    let (code, out) = check(&f, INGRESS, &[("LARK_BRIDGE__INGRESS__PUBLIC_URL", "https://bot.example.com")]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("https://bot.example.com/lark/support/events"), "the Request URL to paste: {out}");
    assert!(out.contains("passed, 0 failed"), "{out}");
    let (code, out) = check(&f, RELAY, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answered in"), "{out}");
    assert_eq!(f.fastgpt.requests()[0].chat_id.as_deref(), Some("lb-check-support"));
    let (code, out) = check(&f, RESPONDER, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tenant token obtained") && out.contains(BOT_OPEN_ID), "{out}");
    f.cleanup().await;
}

#[tokio::test]
async fn a_wrong_app_secret_is_named_with_its_fix() {
    let f = fakes().await;
    f.lark.reject_secret(APP_ID, true);
    let (code, out) = check(&f, RESPONDER, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] Lark credentials of support"), "{out}");
    assert!(out.contains("app_secret"), "the fix names the key: {out}");
    assert!(!out.contains(APP_SECRET), "the secret itself is never printed: {out}");
    f.cleanup().await;
}

#[tokio::test]
async fn a_missing_permission_is_named_as_lark_names_it() {
    let f = fakes().await;
    f.lark.fail_next(
        Endpoint::BotInfo,
        vec![Failure::lark(
            400,
            99991672,
            "Access denied. One of the following scopes is required: [im:message:send_as_bot].",
        )],
    );
    let (code, out) = check(&f, RESPONDER, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] bot of support") && out.contains("im:message:send_as_bot"), "{out}");
    assert!(out.contains("Permissions & Scopes"), "the fix says where: {out}");
    f.cleanup().await;
}

#[tokio::test]
async fn a_wrong_fastgpt_key_is_named_with_its_fix() {
    let f = fakes().await;
    let (code, out) = check(&f, RELAY, &[("LARK_BRIDGE__CHANNELS__SUPPORT__FASTGPT_API_KEY", "fastgpt-wrong")]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unAuthApiKey"), "FastGPT's own words: {out}");
    assert!(out.contains("channels[0].fastgpt_api_key"), "the fix names the key: {out}");
    assert!(!out.contains("fastgpt-wrong"), "the key is never printed: {out}");
    f.cleanup().await;
}

#[tokio::test]
async fn nats_down_fails_every_check_with_the_fix() {
    let f = fakes().await;
    for binary in [INGRESS, RELAY, RESPONDER] {
        let (code, out) = check(&f, binary, &[("LARK_BRIDGE__NATS__URL", "nats://127.0.0.1:1")]).await;
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("[FAIL] NATS") && out.contains("nats-server"), "{out}");
    }
    f.cleanup().await;
}

#[tokio::test]
async fn a_streaming_channel_without_the_cardkit_scope_is_warned_about() {
    let f = fakes().await;
    let streaming = [("LARK_BRIDGE__CHANNELS__SUPPORT__STREAMING", "true")];
    let (code, out) = check(&f, RESPONDER, &streaming).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("streaming cards of support") && out.contains("answers stream"), "{out}");
    f.lark.remove_scope(APP_ID, "cardkit:card:write");
    let (code, out) = check(&f, RESPONDER, &streaming).await;
    assert_eq!(code, 0, "a warning: answers still go out, whole: {out}");
    assert!(
        out.contains("streaming cards of support") && out.contains("cardkit:card:write"),
        "the scope is named: {out}"
    );
    assert!(out.contains("without streaming"), "{out}");
    f.cleanup().await;
}

#[tokio::test]
async fn a_public_url_without_the_files_signing_key_names_the_key_and_how_to_set_it() {
    let f = fakes().await;
    let public = [("LARK_BRIDGE__INGRESS__PUBLIC_URL", "https://bot.example.com")];
    for binary in [INGRESS, RELAY] {
        let (code, out) = check(&f, binary, &public).await;
        assert_eq!(code, 0, "a warning: everything but files works: {out}");
        let files = out.lines().skip_while(|l| !l.contains("[warn] files:")).take(2).collect::<Vec<_>>().join("\n");
        assert!(files.contains("ingress.files_signing_key not set"), "the missing key: {out}");
        assert!(
            files.contains("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY") && files.contains("openssl rand -hex 32"),
            "where to set it, and how to make one: {out}"
        );
        assert!(!files.contains("LARK_BRIDGE__INGRESS__PUBLIC_URL"), "the public URL is set: {out}");
    }
    f.cleanup().await;
}

#[tokio::test]
async fn a_channel_without_keys_is_refused_by_its_place_and_its_id() {
    let f = fakes().await;
    let toml = std::fs::read_to_string(f.config.path()).expect("config");
    let open = toml
        .lines()
        .filter(|l| !l.starts_with("encrypt_key") && !l.starts_with("verification_token"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(f.config.path(), open).expect("config without keys");
    let (code, out) = check(&f, INGRESS, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] secrets"), "{out}");
    assert!(out.contains("channels[0]") && out.contains("channel \"support\""), "both its place and its id: {out}");
    f.cleanup().await;
}
