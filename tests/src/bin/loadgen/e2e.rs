//! `loadgen e2e`: event sent → reply received by the in-process fake Lark,
//! through a bridge that runs elsewhere, with a fake FastGPT answering at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use lark_bridge_tests::fake_lark::{FakeLark, Via};

use crate::events::{EventArgs, EventFactory};
use crate::fakes::{start_fakes, wait_ready, FakesArgs};
use crate::http::{drive, timed_count, LoadArgs, Target};
use crate::report::{latency_line, new_histogram, record, report_load, statuses_line, Report};

#[derive(Args)]
pub(crate) struct E2eArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    fakes: FakesArgs,
}

pub(crate) async fn run(args: E2eArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.load.url)?;
    let (lark, fastgpt) = start_fakes(&args.fakes, &args.events.app_id).await?;
    let result = e2e_run(&args, &target, &lark).await;
    lark.shutdown().await;
    fastgpt.shutdown().await;
    result
}

/// Message ids of the replies the fake Lark received, with the first arrival of each.
fn replies(lark: &FakeLark) -> HashMap<String, Instant> {
    let mut out: HashMap<String, Instant> = HashMap::new();
    for m in lark.visible_messages() {
        if let Via::Reply { message_id } = m.via {
            let at = out.entry(message_id).or_insert(m.received_at);
            *at = (*at).min(m.received_at);
        }
    }
    out
}

async fn wait_for_replies(lark: &FakeLark, ids: &[&str], timeout: Duration) -> HashMap<String, Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = replies(lark);
        if ids.iter().all(|id| got.contains_key(*id)) || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn e2e_run(args: &E2eArgs, target: &Target, lark: &FakeLark) -> anyhow::Result<()> {
    wait_ready(&args.fakes.wait_ready).await?;
    let factory = Arc::new(EventFactory::new(&args.events, 0));
    let warmup_n = args.load.warmup.min(200);
    let n = timed_count(&args.load);
    let (warmup, timed) = {
        let (f, t) = (factory.clone(), target.clone());
        tokio::task::spawn_blocking(move || (f.build(&t, 0, warmup_n), f.build(&t, warmup_n, n))).await?
    };
    for p in warmup.iter().chain(timed.iter()) {
        lark.register_message(&p.message_id, &p.chat_id, None);
    }
    // The warm-up goes through the whole bridge (first token, bot info,
    // connections), one event at a time, and must come back.
    let warm_ids: Vec<String> = warmup.iter().map(|p| p.message_id.clone()).collect();
    let warm_load = LoadArgs { rate: None, concurrency: 1, warmup: 0, repeat: false, ..args.load.clone() };
    let (warm_stats, _) = drive(target, &warm_load, Vec::new(), warmup, false, false).await?;
    if warm_stats.ok() < warm_ids.len() as u64 {
        bail!("the warm-up events were not all accepted: {}", statuses_line(&warm_stats));
    }
    let ids: Vec<&str> = warm_ids.iter().map(String::as_str).collect();
    let got = wait_for_replies(lark, &ids, args.fakes.reply_timeout).await;
    let missing = ids.iter().filter(|id| !got.contains_key(**id)).count();
    if missing > 0 {
        bail!("{missing} of {} warm-up events got no reply within {:?}: is the bridge configured with fake Lark {} and fake FastGPT {}?", ids.len(), args.fakes.reply_timeout, args.fakes.lark_listen, args.fakes.fastgpt_listen);
    }

    let ids: Vec<String> = timed.iter().map(|p| p.message_id.clone()).collect();
    let load = LoadArgs { warmup: 0, repeat: false, ..args.load.clone() };
    let (stats, start) = drive(target, &load, Vec::new(), timed, true, false).await?;
    let accepted: Vec<&(usize, Instant, u16)> = stats.sends.iter().filter(|(_, _, s)| (200..300).contains(s)).collect();
    let wanted: Vec<&str> = accepted.iter().map(|(i, _, _)| ids[*i].as_str()).collect();
    let got = wait_for_replies(lark, &wanted, args.fakes.reply_timeout).await;
    let mut e2e_hist = new_histogram();
    let mut missing = 0u64;
    for (i, sent_at, _) in &accepted {
        match got.get(&ids[*i]) {
            Some(at) => record(&mut e2e_hist, *sent_at, *at),
            None => missing += 1,
        }
    }
    let mut report = Report::new();
    report_load(&mut report, target, &load, &stats, start, n);
    println!("replies     {} of {} accepted events answered, {missing} missing", e2e_hist.len(), accepted.len());
    if !e2e_hist.is_empty() {
        println!("end to end  {}", latency_line(&e2e_hist));
    }
    report.set("replies", e2e_hist.len());
    report.set("missing", missing);
    if !e2e_hist.is_empty() {
        report.latency("e2e_", &e2e_hist);
    }
    report.write(args.load.report.as_ref())
}
