use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

use super::*;

const MINIMAL: &str = r#"
[nats]
namespace = "t1"

[[channels]]
id = "support"
app_id = "cli_a"
app_secret = "s3cret"
encrypt_key = "ek"
fastgpt_base_url = "http://127.0.0.1:3000/api"
fastgpt_api_key = "fastgpt-key"

[[channels]]
id = "sales-eu"
app_id = "cli_b"
app_secret = "other"
lark_base_url = "https://open.larksuite.com"
fastgpt_base_url = "https://cloud.fastgpt.io/api"
fastgpt_api_key = "fastgpt-key2"
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn err(text: &str, e: &[(&str, &str)]) -> String {
    Settings::from_toml_with_env(text, &env(e)).expect_err("must fail").to_string()
}

#[test]
fn loads_with_defaults() {
    let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
    assert_eq!(s.nats.namespace, "t1");
    assert_eq!(s.nats.url, "nats://127.0.0.1:4222");
    assert_eq!(s.ingress.body_limit_bytes, 1024 * 1024);
    assert_eq!(s.relay.fastgpt_timeout_secs, 120);
    assert_eq!(s.channels.len(), 2);
    assert_eq!(s.channels[0].lark_base_url.as_str(), "https://open.feishu.cn/");
    assert_eq!(s.channels[1].lark_base_url.host_str(), Some("open.larksuite.com"));
    assert!(s.channels[1].encrypt_key.is_none());
}

#[test]
fn the_example_config_in_the_repo_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config.example.toml");
    let text = std::fs::read_to_string(path).expect("deploy/config.example.toml exists");
    Settings::from_toml_with_env(&text, &env(&[])).expect("the example config is valid");
}

#[test]
fn environment_overrides_sections_and_channels() {
    let s = Settings::from_toml_with_env(
        MINIMAL,
        &env(&[
            ("LARK_BRIDGE__NATS__URL", "nats://nats:4222"),
            ("LARK_BRIDGE__INGRESS__BODY_LIMIT_BYTES", "2048"),
            ("LARK_BRIDGE__CHANNELS__SALES_EU__APP_SECRET", "from-env"),
            ("LARK_BRIDGE__CHANNELS__0__FASTGPT_API_KEY", "fastgpt-env"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.nats.url, "nats://nats:4222");
    assert_eq!(s.ingress.body_limit_bytes, 2048);
    let exposed = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    assert_eq!(exposed(&s.channels[1].app_secret).as_deref(), Some("from-env"));
    assert_eq!(exposed(&s.channels[0].fastgpt_api_key).as_deref(), Some("fastgpt-env"));
    assert_eq!(exposed(&s.channels[0].app_secret).as_deref(), Some("s3cret"));
}

#[test]
fn errors_name_the_key() {
    let e = err(&MINIMAL.replace("app_id = \"cli_a\"\n", ""), &[]);
    assert!(e.contains("app_id"), "{e}");
    let e = err(&MINIMAL.replace("namespace = \"t1\"", "namespace = \"a.b\""), &[]);
    assert!(e.contains("nats.namespace"), "{e}");
    let e = err(&MINIMAL.replace("id = \"sales-eu\"", "id = \"support\""), &[]);
    assert!(e.contains("channels[1].id") && e.contains("twice"), "{e}");
    let e = err(&MINIMAL.replace("encrypt_key = ", "encrypt_kye = "), &[]);
    assert!(e.contains("encrypt_kye"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__BODY_LIMIT_BYTES", "lots")]);
    assert!(e.contains("body_limit_bytes"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__CHANNELS__NOPE__APP_SECRET", "x")]);
    assert!(e.contains("LARK_BRIDGE__CHANNELS__NOPE__APP_SECRET"), "{e}");
    let e = err(&MINIMAL.replace("http://127.0.0.1:3000/api", "not a url"), &[]);
    assert!(e.contains("fastgpt_base_url"), "{e}");
    let e = err(&MINIMAL.replace("[nats]", "[ingress]\nlisten = \"nowhere\"\n[nats]"), &[]);
    assert!(e.contains("listen"), "{e}");
}

#[test]
fn stream_limits_have_defaults_and_errors_name_the_key() {
    let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
    assert_eq!(s.nats.events_max_bytes, 512 * 1024 * 1024);
    assert_eq!(s.nats.dead_max_age_days, 14);
    let s = Settings::from_toml_with_env(
        &MINIMAL.replace("[nats]", "[nats]\nurl = \"nats://a:4222, nats://b:4222,nats://c:4222\""),
        &env(&[("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", "2048")]),
    )
    .expect("a list of servers and a small limit are valid");
    assert_eq!(s.nats.events_max_bytes, 2048);
    let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__EVENTS_MAX_BYTES", "10")]);
    assert!(e.contains("nats.events_max_bytes"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__BUCKET_MAX_BYTES", "0")]);
    assert!(e.contains("nats.bucket_max_bytes"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__DEAD_MAX_AGE_DAYS", "0")]);
    assert!(e.contains("nats.dead_max_age_days"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__URL", "nats://a:4222,,")]);
    assert!(e.contains("nats.url"), "{e}");
}

#[test]
fn subscription_and_long_connections() {
    let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
    assert_eq!(s.channels[0].subscription, Subscription::Webhook, "the default");
    assert_eq!(s.ingress.long_connections_per_channel, 1);
    let lc = MINIMAL.replace("id = \"sales-eu\"", "id = \"sales-eu\"\nsubscription = \"long_connection\"");
    let s = Settings::from_toml_with_env(&lc, &env(&[("LARK_BRIDGE__INGRESS__LONG_CONNECTIONS_PER_CHANNEL", "3")]))
        .expect("valid");
    assert_eq!(s.channels[1].subscription, Subscription::LongConnection);
    assert_eq!(s.ingress.long_connections_per_channel, 3);
    let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__LONG_CONNECTIONS_PER_CHANNEL", "51")]);
    assert!(e.contains("ingress.long_connections_per_channel"), "{e}");
    let e = err(&MINIMAL.replace("id = \"sales-eu\"", "id = \"sales-eu\"\nsubscription = \"websocket\""), &[]);
    assert!(e.contains("websocket"), "{e}");
}

#[test]
fn files_need_the_public_url_and_the_signing_key() {
    let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
    assert_eq!(s.relay.max_file_bytes, 20 * 1024 * 1024);
    assert_eq!(s.nats.files_max_age_secs, 24 * 3600);
    let FilesSetup::Disabled { missing } = s.files() else { panic!("off by default") };
    assert_eq!(missing, "ingress.public_url and ingress.files_signing_key");
    let fix = s.files_fix();
    assert!(fix.contains("LARK_BRIDGE__INGRESS__PUBLIC_URL") && fix.contains("openssl rand"), "{fix}");
    let key = "k".repeat(32);
    let only_key = [("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY", key.as_str())];
    let s = Settings::from_toml_with_env(MINIMAL, &env(&only_key)).expect("valid");
    assert!(matches!(s.files(), FilesSetup::Disabled { missing: "ingress.public_url" }));
    let both = [only_key[0], ("LARK_BRIDGE__INGRESS__PUBLIC_URL", "https://bot.example.com")];
    let s = Settings::from_toml_with_env(MINIMAL, &env(&both)).expect("valid");
    let FilesSetup::Enabled { public_url, .. } = s.files() else { panic!("on with both") };
    assert_eq!(public_url.as_str(), "https://bot.example.com/");
    assert!(!format!("{s:?}").contains(&key), "the signing key is a secret");

    let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__FILES_SIGNING_KEY", "short")]);
    assert!(e.contains("ingress.files_signing_key"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__INGRESS__PUBLIC_URL", "ftp://bot.example.com")]);
    assert!(e.contains("ingress.public_url"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", "104857601")]);
    assert!(e.contains("relay.max_file_bytes") && e.contains("100 MB"), "{e}");
    let e =
        err(MINIMAL, &[("LARK_BRIDGE__NATS__FILES_MAX_BYTES", "4096"), ("LARK_BRIDGE__RELAY__MAX_FILE_BYTES", "8192")]);
    assert!(e.contains("relay.max_file_bytes") && e.contains("nats.files_max_bytes"), "{e}");
    let e = err(MINIMAL, &[("LARK_BRIDGE__NATS__FILES_MAX_AGE_SECS", "0")]);
    assert!(e.contains("nats.files_max_age_secs"), "{e}");
}

#[test]
fn secrets_do_not_show_in_debug() {
    let s = Settings::from_toml_with_env(MINIMAL, &env(&[])).expect("valid");
    let dbg = format!("{s:?}");
    for secret in ["s3cret", "fastgpt-key", "\"ek\""] {
        assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
    }
}
