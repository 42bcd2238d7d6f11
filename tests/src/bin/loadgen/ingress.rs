//! `loadgen ingress`: the events to a Request URL (the bridge's ingress, the
//! floor server or the Node peer), acknowledgement latency and throughput;
//! `--check` first proves the target verifies signatures.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Args;
use common::lark::signature::SIGNATURE_HEADER;
use lark_bridge_tests::lark_events::message_id_of;

use crate::events::{raw_request, EventArgs, EventFactory};
use crate::http::{drive, timed_count, Conn, LoadArgs, Target};
use crate::report::{report_load, Report};

#[derive(Args)]
pub(crate) struct IngressArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    events: EventArgs,
    /// Before the run: one valid event must be accepted (2xx), one with a
    /// tampered signature refused (4xx); the run stops otherwise.
    #[arg(long)]
    check: bool,
    /// The target answers each event with a body naming its message_id (the
    /// Node peer does): count the answers that do, proving it decrypted them.
    #[arg(long)]
    echo_check: bool,
}

pub(crate) async fn run(args: IngressArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.load.url)?;
    let factory = Arc::new(EventFactory::new(&args.events, 1000));
    if args.check {
        check_target(&target, &factory, args.echo_check).await?;
    }
    let n = timed_count(&args.load);
    let built_at = Instant::now();
    let (warmup, timed) = {
        let (f, t, w) = (factory.clone(), target.clone(), args.load.warmup);
        tokio::task::spawn_blocking(move || (f.build(&t, 0, w), f.build(&t, w, n))).await?
    };
    eprintln!("loadgen: built {} events in {:.1} s", warmup.len() + timed.len(), built_at.elapsed().as_secs_f64());
    let (stats, start) = drive(&target, &args.load, warmup, timed, false, args.echo_check).await?;
    let mut report = Report::new();
    report_load(&mut report, &target, &args.load, &stats, start, n);
    if args.echo_check {
        println!("decrypted   {} answers named their event's message_id", stats.echo_ok);
        report.set("echo_ok", stats.echo_ok);
    }
    report.write(args.load.report.as_ref())
}

/// One valid event must be accepted, one with a tampered signature refused.
async fn check_target(target: &Target, factory: &EventFactory, echo: bool) -> anyhow::Result<()> {
    let mut conn = Conn::connect(target.addr).await.with_context(|| format!("cannot connect to {}", target.addr))?;
    let event = factory.event(usize::MAX / 2);
    let message_id = message_id_of(&event).unwrap_or_default().to_owned();
    let good = conn.send(&raw_request(target, &factory.signed(&event))).await?;
    let body = String::from_utf8_lossy(&good.body).into_owned();
    if !(200..300).contains(&good.status) {
        bail!("check: a valid signed event was answered {} {body}", good.status);
    }
    if echo && !body.contains(&message_id) {
        bail!("check: the answer to a valid event does not name its message_id {message_id}: {body:?}");
    }
    let mut tampered = factory.signed(&factory.event(usize::MAX / 2 + 1));
    for (name, value) in tampered.headers.iter_mut() {
        if name == SIGNATURE_HEADER {
            let flipped = if value.ends_with('0') { '1' } else { '0' };
            value.pop();
            value.push(flipped);
        }
    }
    if !conn.open {
        conn = Conn::connect(target.addr).await?;
    }
    let bad = conn.send(&raw_request(target, &tampered)).await?;
    if !(400..500).contains(&bad.status) {
        bail!(
            "check: an event with a tampered signature was answered {} {}: the target does not verify signatures",
            bad.status,
            String::from_utf8_lossy(&bad.body)
        );
    }
    println!(
        "check       valid event: {}{}; tampered signature: {}",
        good.status,
        if echo { " naming its message_id (decrypted)" } else { "" },
        bad.status
    );
    Ok(())
}
