//! `relay --config FILE`: Lark messages in, FastGPT questions out, reply commands back.

use std::process::ExitCode;

use common::cli::Cli;
use common::service_name::Service;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse(Service::Relay);
    let settings = cli.settings()?;
    if cli.service.check {
        return Ok(relay::check::run(&settings).await.finish());
    }
    let telemetry = common::telemetry::init(Service::Relay.name(), &settings.telemetry);
    let shutdown = common::shutdown::on_signal();
    let app = relay::Application::build(settings, &shutdown).await?;
    app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}
