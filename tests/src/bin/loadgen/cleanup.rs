//! `loadgen cleanup`: deletes a namespace's streams and buckets after a
//! benchmark, so that runs leave nothing behind in NATS.

use clap::Args;
use common::config::NatsSettings;
use common::topology::Topology;

#[derive(Args)]
pub(crate) struct CleanupArgs {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long)]
    namespace: String,
}

pub(crate) async fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let js = crate::jetstream::connect(&args.nats).await?;
    let settings = NatsSettings { url: args.nats.clone(), namespace: args.namespace.clone(), ..Default::default() };
    let t = Topology::new(&settings);
    let mut deleted = Vec::new();
    // Every stream, and every bucket as its stream (`KV_...`).
    for cfg in t.all_configs() {
        if js.delete_stream(&cfg.name).await.is_ok() {
            deleted.push(cfg.name);
        }
    }
    println!(
        "cleanup     namespace {}: deleted {}",
        args.namespace,
        if deleted.is_empty() { "nothing".to_owned() } else { deleted.join(", ") }
    );
    Ok(())
}
