//! `responder --config FILE`: reply commands in, Lark messages out.
//! `--dead-letters` and `--redrive` are the operator's tools for what could
//! not be delivered: they print their answer and nothing else (no service
//! logs), so they run without telemetry.

use std::process::ExitCode;

use common::cli::Cli;
use common::service_name::Service;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse(Service::Responder);
    let settings = cli.settings()?;
    if cli.service.check {
        return Ok(responder::check::run(&settings).await.finish());
    }
    let admin = &cli.dead_letters;
    if admin.requested() {
        responder::admin::dead_letters(&settings, admin.channel.as_deref(), admin.redrive).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let telemetry = common::telemetry::init(Service::Responder.name(), &settings.telemetry);
    let shutdown = common::shutdown::on_signal();
    let app = responder::Application::build(settings, &shutdown).await?;
    app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}
