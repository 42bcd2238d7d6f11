//! The fake Lark and fake FastGPT that `e2e` and `stream` run in this
//! process, so that a reply is timed where it arrives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use lark_bridge_tests::fake_fastgpt::FakeFastGpt;
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark};

use crate::http::Target;
use crate::loopback::require_loopback;
use crate::parse_duration;

/// The fake Lark and fake FastGPT that `e2e` and `stream` run in-process.
#[derive(Args, Clone)]
pub(crate) struct FakesArgs {
    /// Where the fake Lark Open API listens (the channel's `lark_base_url`).
    #[arg(long, default_value = "127.0.0.1:18285")]
    pub(crate) lark_listen: SocketAddr,
    /// Where the fake FastGPT listens (the channel's `fastgpt_base_url` is `http://ADDR/api`).
    #[arg(long, default_value = "127.0.0.1:18286")]
    pub(crate) fastgpt_listen: SocketAddr,
    #[arg(long, default_value = "bench-app-secret")]
    pub(crate) app_secret: String,
    #[arg(long, default_value = "ou_bench_bot")]
    pub(crate) bot_open_id: String,
    #[arg(long, default_value = "fastgpt-bench-key")]
    pub(crate) fastgpt_key: String,
    /// After the last event, how long to wait for the missing replies.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) reply_timeout: Duration,
    /// URLs that must answer 200 before anything is sent (e.g. each service's /readyz).
    #[arg(long)]
    pub(crate) wait_ready: Vec<String>,
}

/// Starts the fake Lark (one app) and the fake FastGPT on their loopback addresses.
pub(crate) async fn start_fakes(fakes: &FakesArgs, app_id: &str) -> anyhow::Result<(FakeLark, FakeFastGpt)> {
    require_loopback(&fakes.lark_listen, "--lark-listen")?;
    require_loopback(&fakes.fastgpt_listen, "--fastgpt-listen")?;
    let app = FakeApp::new(app_id, &fakes.app_secret, &fakes.bot_open_id);
    let lark = FakeLark::start_on(fakes.lark_listen, vec![app])
        .await
        .with_context(|| format!("cannot listen on {} for the fake Lark", fakes.lark_listen))?;
    let fastgpt = FakeFastGpt::start_on(fakes.fastgpt_listen, &fakes.fastgpt_key)
        .await
        .with_context(|| format!("cannot listen on {} for the fake FastGPT", fakes.fastgpt_listen))?;
    eprintln!("loadgen: fake Lark on {}, fake FastGPT on {}", lark.base_url(), fastgpt.base_url());
    Ok((lark, fastgpt))
}

/// Waits until every URL of `urls` answers 200 (60 s at most).
pub(crate) async fn wait_ready(urls: &[String]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in urls {
        Target::parse(url)?;
        loop {
            if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{url} did not answer 200 within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
