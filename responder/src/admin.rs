//! The operator's dead-letter commands: list what could not be delivered and
//! why, and re-drive it once the cause is fixed.

use async_nats::jetstream;
use common::config::Settings;
use common::dead_letter;
use common::topology::Topology;

pub async fn dead_letters(settings: &Settings, channel: Option<&str>, redrive: bool) -> anyhow::Result<()> {
    // With the configured credentials, like the services (not a bare connect).
    let client = common::nats::connect_once(&settings.nats, "responder-admin").await?;
    let js = jetstream::new(client);
    let topology = Topology::new(&settings.nats);
    topology.ensure_streams(&js).await?;
    let letters = dead_letter::list(&js, &topology, channel).await?;
    if letters.is_empty() {
        println!("no dead letters{}", channel.map(|c| format!(" for channel {c}")).unwrap_or_default());
        return Ok(());
    }
    for l in &letters {
        println!(
            "#{} {} channel={} stage={} -> {}\n    {}",
            l.sequence, l.time, l.channel, l.stage, l.original_subject, l.reason
        );
    }
    if redrive {
        let n = dead_letter::redrive(&js, &topology, channel).await?;
        println!("re-drove {n} dead letter(s): they are back in work");
    } else {
        println!("{} dead letter(s). Fix the cause, then run: responder --config FILE --redrive", letters.len());
    }
    Ok(())
}
