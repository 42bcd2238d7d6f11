//! `ingress --config FILE`: Lark's callbacks in, JetStream messages out.

use std::process::ExitCode;

use common::cli::Cli;
use common::service_name::Service;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse(Service::Ingress);
    let settings = cli.settings()?;
    if cli.service.check {
        return Ok(ingress::check::run(&settings).await.finish());
    }
    let telemetry = common::telemetry::init(Service::Ingress.name(), &settings.telemetry);
    let shutdown = common::shutdown::on_signal();
    let app = ingress::Application::build(settings).await?;
    app.run_until_stopped(shutdown).await?;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}
