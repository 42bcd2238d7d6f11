//! `responder --config FILE`: reply commands in, Lark messages out.
//! `--dead-letters` and `--redrive` are the operator's tools for what could
//! not be delivered.

use std::process::ExitCode;

use clap::Parser;
use common::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let settings = cli.settings()?;
    if cli.check {
        return Ok(responder::check::run(&settings).await.finish());
    }
    let telemetry = common::telemetry::init("responder", &settings.telemetry);
    if cli.dead_letters || cli.redrive {
        let done = responder::admin::dead_letters(&settings, cli.channel.as_deref(), cli.redrive).await;
        telemetry.shutdown();
        return done.map(|()| ExitCode::SUCCESS);
    }
    let shutdown = common::shutdown::on_signal();
    let app = responder::Application::build(settings, &shutdown).await?;
    app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}
