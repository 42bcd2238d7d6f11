//! `relay --config FILE`: Lark messages in, FastGPT questions out, reply commands back.

use clap::Parser;
use common::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.settings()?;
    let telemetry = common::telemetry::init("relay", &settings.telemetry);
    let shutdown = common::shutdown::on_signal();
    let app = relay::Application::build(settings, &shutdown).await?;
    app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    Ok(())
}
