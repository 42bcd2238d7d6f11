//! `ingress --config FILE`: Lark's callbacks in, JetStream messages out.

use clap::Parser;
use common::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.settings()?;
    let telemetry = common::telemetry::init("ingress", &settings.telemetry);
    let shutdown = common::shutdown::on_signal();
    let app = ingress::Application::build(settings, &shutdown).await?;
    app.run_until_stopped(shutdown).await?;
    telemetry.shutdown();
    Ok(())
}
