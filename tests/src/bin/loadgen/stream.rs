//! `loadgen stream`: streamed answers through the bridge, rounds of
//! questions at once with FastGPT writing at a set pace; the first visible
//! text, the texts each answer showed, the Lark calls it cost and the CPU
//! the services spent per answer.

mod lark_figures;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use lark_bridge_tests::fake_fastgpt::{FakeAnswer, FakeFastGpt};
use lark_bridge_tests::fake_lark::{FakeLark, SentMessage};

use crate::events::{question_tag, EventArgs, EventFactory, Prebuilt};
use crate::fakes::{start_fakes, wait_ready, FakesArgs};
use crate::http::{drive, LoadArgs, Target};
use crate::parse_duration;
use crate::report::{latency_line, new_histogram, record, Report};
use lark_figures::{card_ops, distinct_texts, lark_calls};

#[derive(Args)]
pub(crate) struct StreamArgs {
    /// The channel's Request URL (http, loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080/lark/bench/events")]
    url: String,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    fakes: FakesArgs,
    /// The channel's `streaming` in the bridge's configuration. `true`: each
    /// answer shows in a card as FastGPT writes it. `false`: each answer is
    /// sent whole; the fake FastGPT then answers after the time the streamed
    /// answer takes (`--pace`), in one piece, so both runs keep as many
    /// answers in flight for as long.
    #[arg(long, action = clap::ArgAction::Set)]
    streaming: bool,
    /// Questions asked at once, each in its own private chat (with the
    /// default `--chats`): the answers in flight.
    #[arg(long, default_value_t = 20)]
    in_flight: usize,
    /// Rounds of `--in-flight` questions; a round starts when every answer of
    /// the one before is complete.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// FastGPT's pace, `NxD`: `N` deltas `D` apart, the first `D` after the
    /// headers (the fake's `stream:NxD` hint, put in each question). The
    /// fake echoes the question, one delta per few characters at most: past
    /// 40 deltas each question is padded with filler words to twice `N`
    /// characters, so the echo has enough for `N` deltas.
    #[arg(long, default_value = "40x100ms", value_parser = parse_pace)]
    pace: Pace,
    /// A process whose CPU time (utime + stime of /proc/PID/stat) is read
    /// before and after the timed rounds, as `NAME=PID`; repeat for several.
    /// Names starting with `nats` are not counted in the services' sum.
    #[arg(long = "cpu-pid", value_parser = parse_named_pid)]
    cpu_pids: Vec<(String, u32)>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clock_ticks: u64,
    /// Timeout of one request to the Request URL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Wait this long after the warm-up before the timed rounds: a bridge
    /// that has run a while (its Lark allowances past the first minute's
    /// ramp, the warm-up's calls out of the minute window), not one that has
    /// just started.
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Write the figures as `key=value` lines to this file too.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// The words after each timed question: the pace hint, and past 40 deltas
/// filler words up to twice as many characters as deltas (the fake FastGPT
/// cuts its echo into at most one delta per character).
fn timed_hint(pace: &Pace) -> String {
    let mut hint = format!(" stream:{}", pace.text);
    if pace.deltas > 40 {
        let want = 2 * pace.deltas;
        hint.push_str(" padding:");
        while hint.len() < want {
            hint.push_str(" lorem ipsum dolor");
        }
    }
    hint
}

/// FastGPT's pace in a streamed answer: see [`StreamArgs::pace`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pace {
    deltas: usize,
    every: Duration,
    /// As given (`40x100ms`): the fake FastGPT reads it back from the question.
    text: String,
}

impl Pace {
    /// How long the whole answer takes to write.
    fn total(&self) -> Duration {
        self.every * u32::try_from(self.deltas).unwrap_or(u32::MAX)
    }
}

/// `NxD` with `D` in whole `ms` or `s`, as the fake FastGPT's hint reads it.
fn parse_pace(s: &str) -> Result<Pace, String> {
    let bad = || format!("not a pace: {s:?} (use NxD, e.g. 40x100ms or 10x1s)");
    let (n, every) = s.trim().split_once('x').ok_or_else(bad)?;
    let deltas: usize = n.parse().map_err(|_| bad())?;
    let every = match every.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().map_err(|_| bad())?),
        None => Duration::from_secs(every.strip_suffix('s').ok_or_else(bad)?.parse().map_err(|_| bad())?),
    };
    if !(1..=1000).contains(&deltas) || every > Duration::from_secs(60) {
        return Err(format!("{s:?}: 1 to 1000 deltas, at most 60 s apart"));
    }
    Ok(Pace { deltas, every, text: s.trim().to_owned() })
}

/// `NAME=PID`.
fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or_else(|| format!("not NAME=PID: {s:?}"))?;
    let pid = pid.trim().parse().map_err(|_| format!("not a process id: {pid:?}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("{name:?}: a name of letters, digits, - and _"));
    }
    Ok((name.to_owned(), pid))
}

pub(crate) async fn run(args: StreamArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    if args.in_flight == 0 || args.in_flight > 1000 || args.rounds == 0 || args.rounds > 1000 {
        bail!("--in-flight and --rounds must be from 1 to 1000");
    }
    let (lark, fastgpt) = start_fakes(&args.fakes, &args.events.app_id).await?;
    let result = stream_run(&args, &target, &lark, &fastgpt).await;
    lark.shutdown().await;
    fastgpt.shutdown().await;
    result
}

/// A question of the timed rounds that the ingress accepted.
struct Asked {
    /// Its number: [`question_tag`].
    number: usize,
    message_id: String,
    sent_at: Instant,
}

/// CPU time of a process so far (utime + stime), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The replies to each message, in arrival order.
fn replies_by_message(lark: &FakeLark) -> HashMap<String, Vec<SentMessage>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for m in lark.visible_messages() {
        if let Some(to) = m.reply_to() {
            out.entry(to.to_owned()).or_default().push(m);
        }
    }
    out
}

/// Waits until every question in `ids` has a complete answer: a reply, and
/// no card among its replies still streaming. How many are not, at the end.
async fn wait_for_answers(lark: &FakeLark, ids: &[String], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let replies = replies_by_message(lark);
        let open = ids
            .iter()
            .filter(|id| {
                replies.get(*id).is_none_or(|ms| ms.iter().any(|m| m.card.as_ref().is_some_and(|c| c.streaming)))
            })
            .count();
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `batch` at once over as many connections: the accepted questions,
/// and how many were not (other statuses, errors).
async fn ask_round(
    target: &Target,
    args: &StreamArgs,
    batch: Vec<Prebuilt>,
    first_number: usize,
) -> anyhow::Result<(Vec<Asked>, u64)> {
    let ids: Vec<String> = batch.iter().map(|p| p.message_id.clone()).collect();
    let load = LoadArgs {
        url: args.url.clone(),
        rate: None,
        concurrency: batch.len().max(1),
        duration: Duration::from_secs(120),
        max_events: batch.len(),
        repeat: false,
        warmup: 0,
        request_timeout: args.request_timeout,
        report: None,
    };
    let (stats, _) = drive(target, &load, Vec::new(), batch, true, false).await?;
    let asked: Vec<Asked> = stats
        .sends
        .iter()
        .filter(|(_, _, status)| (200..300).contains(status))
        .map(|(i, sent_at, _)| Asked { number: first_number + i, message_id: ids[*i].clone(), sent_at: *sent_at })
        .collect();
    let refused = ids.len() as u64 - asked.len() as u64;
    Ok((asked, refused))
}

async fn stream_run(args: &StreamArgs, target: &Target, lark: &FakeLark, fastgpt: &FakeFastGpt) -> anyhow::Result<()> {
    wait_ready(&args.fakes.wait_ready).await?;
    let k = args.in_flight;
    let timed_factory = Arc::new(EventFactory::new(&args.events, k).with_hint(&timed_hint(&args.pace)));
    // The warm-up asks in the same chats, quickly (first token, bot info,
    // connections, each chat's conversation): not measured.
    let warm_hint = if args.streaming { " stream:4x25ms" } else { "" };
    let warm_factory = Arc::new(EventFactory::new(&args.events, k).with_hint(warm_hint).in_chats_of(&timed_factory));
    let n = k * args.rounds;
    let (warmup, timed) = {
        let (w, f, t) = (warm_factory.clone(), timed_factory.clone(), target.clone());
        tokio::task::spawn_blocking(move || (w.build(&t, 0, k), f.build(&t, k, n))).await?
    };
    for p in warmup.iter().chain(timed.iter()) {
        lark.register_message(&p.message_id, &p.chat_id, None);
    }
    let (warm, refused) = ask_round(target, args, warmup, 0).await?;
    if refused > 0 {
        bail!("{refused} of {k} warm-up events were not accepted by {}", target.addr);
    }
    let warm_ids: Vec<String> = warm.iter().map(|a| a.message_id.clone()).collect();
    let open = wait_for_answers(lark, &warm_ids, args.fakes.reply_timeout).await;
    if open > 0 {
        bail!(
            "{open} of {k} warm-up questions got no complete answer within {:?}: is the bridge configured with fake Lark {} and fake FastGPT {}?",
            args.fakes.reply_timeout,
            args.fakes.lark_listen,
            args.fakes.fastgpt_listen
        );
    }

    if let Some(settle) = args.settle {
        println!("settle      waiting {settle:?} before the timed rounds");
        tokio::time::sleep(settle).await;
    }
    let cpu_before: Vec<Option<u64>> = args.cpu_pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let started = Instant::now();
    let mut asked: Vec<Asked> = Vec::with_capacity(n);
    let mut refused = 0;
    let mut timed = timed.into_iter();
    for round in 0..args.rounds {
        let batch: Vec<Prebuilt> = timed.by_ref().take(k).collect();
        if !args.streaming {
            // Whole answers take as long as the streamed ones.
            let late = FakeAnswer::Delay(args.pace.total(), Box::new(FakeAnswer::Echo));
            fastgpt.push_responses(vec![late; batch.len()]);
        }
        let (round_asked, round_refused) = ask_round(target, args, batch, k + round * k).await?;
        refused += round_refused;
        let ids: Vec<String> = round_asked.iter().map(|a| a.message_id.clone()).collect();
        let open = wait_for_answers(lark, &ids, args.fakes.reply_timeout).await;
        if open > 0 {
            eprintln!(
                "loadgen: round {}: {open} answers not complete within {:?}",
                round + 1,
                args.fakes.reply_timeout
            );
        }
        asked.extend(round_asked);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // What the services still do for the last answers (acknowledgements,
    // the typing reaction's removal) belongs to them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_after: Vec<Option<u64>> = args.cpu_pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let calls = lark_calls(lark, started, Instant::now());

    let replies = replies_by_message(lark);
    let requests = fastgpt.requests();
    let (mut first_text, mut sent_text, mut complete) = (new_histogram(), new_histogram(), new_histogram());
    let (mut answered, mut missing, mut exact, mut extra, mut streamed) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut card_ids = std::collections::HashSet::new();
    let mut texts: Vec<usize> = Vec::with_capacity(asked.len());
    for q in &asked {
        let tag = question_tag(q.number);
        let request = requests.iter().find(|r| r.content.contains(&tag));
        let Some(reply) = replies.get(&q.message_id).and_then(|ms| ms.first()) else {
            missing += 1;
            continue;
        };
        answered += 1;
        extra += replies.get(&q.message_id).map_or(0, |ms| ms.len() - 1);
        if let Some(card_id) = reply.card_id() {
            card_ids.insert(card_id.to_owned());
        }
        let history = lark.visible_text_history(&reply.message_id);
        texts.push(distinct_texts(&history));
        let shown = history.iter().find(|(_, text)| !text.trim().is_empty()).map(|(at, _)| *at);
        if let Some(shown) = shown {
            record(&mut sent_text, q.sent_at, shown);
            if let Some(first_delta) = request.and_then(|r| r.first_delta_at()) {
                record(&mut first_text, first_delta, shown);
            }
        }
        if let Some((at, _)) = history.last() {
            record(&mut complete, q.sent_at, *at);
            let answer = request.and_then(|r| r.answer.as_deref());
            if answer.is_some() && answer == answer_text(lark, reply).as_deref() {
                exact += 1;
            }
        }
        if request.is_some_and(|r| r.streamed) {
            streamed += 1;
        }
    }
    let ops = card_ops(lark, &card_ids);
    if args.streaming && streamed < answered {
        eprintln!(
            "loadgen: only {streamed} of {answered} answers were asked of FastGPT as a stream: \
             is the channel's streaming really on (LARK_BRIDGE__CHANNELS__{{ID}}__STREAMING overrides the file)?"
        );
    } else if !args.streaming && streamed > 0 {
        eprintln!(
            "loadgen: {streamed} answers were asked of FastGPT as a stream: is the channel's streaming really off?"
        );
    }

    let mode = if args.streaming { "streamed in cards (streaming = true)" } else { "whole (streaming = false)" };
    println!("target      {}{}: answers {mode}", target.addr, target.path);
    println!(
        "load        {k} questions at once in {} chats, {} rounds; FastGPT writes each answer in {} deltas {:?} apart ({:.1} s){}",
        args.events.chats.unwrap_or(k),
        args.rounds,
        args.pace.deltas,
        args.pace.every,
        args.pace.total().as_secs_f64(),
        if args.streaming { "" } else { ", sent whole at the end" }
    );
    println!(
        "answers     {answered} of {} accepted questions ({refused} not accepted), {missing} missing, {extra} extra messages; \
         final text exactly FastGPT's: {exact}; FastGPT streamed {streamed}; {elapsed:.1} s",
        asked.len()
    );
    if !first_text.is_empty() {
        println!("first text  FastGPT's first delta → first visible text: {}", latency_line(&first_text));
        println!("            goal: p50 ≤ 300 ms, p99 ≤ 800 ms (a figure, not a test)");
    }
    if !sent_text.is_empty() {
        println!("sent→text   event sent → first visible text:          {}", latency_line(&sent_text));
    }
    if !complete.is_empty() {
        println!("sent→whole  event sent → complete answer visible:      {}", latency_line(&complete));
    }
    texts.sort_unstable();
    let texts_mean = if texts.is_empty() { 0.0 } else { texts.iter().sum::<usize>() as f64 / texts.len() as f64 };
    let (texts_min, texts_max) = (texts.first().copied().unwrap_or(0), texts.last().copied().unwrap_or(0));
    if !texts.is_empty() {
        println!(
            "texts       per answer, distinct texts shown: mean {texts_mean:.1}, min {texts_min}, max {texts_max}"
        );
    }
    let per_answer = |n: usize| if answered > 0 { n as f64 / answered as f64 } else { 0.0 };
    println!(
        "lark calls  {} in all ({:.1} per answer: {}); refused as over a rate limit: {} (CardKit {})",
        calls.total,
        per_answer(calls.total),
        calls.by_api_line(),
        calls.rate_limited,
        calls.cardkit_rate_limited
    );
    let kinds: Vec<String> = ops.by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if ops.cards > 0 {
        println!(
            "card ops    {} cards, {} operations ({}), {:.1} per card; busiest second of a card {} (Lark's limit 10), \
             mean {:.2} per second per card; refused: {} rate-limited, {} other errors (Lark's code:count {})",
            ops.cards,
            ops.ops,
            kinds.join(", "),
            ops.ops as f64 / ops.cards as f64,
            ops.max_per_second,
            ops.mean_per_second,
            ops.rate_limited,
            ops.other_errors,
            ops.codes_line()
        );
    } else {
        println!("card ops    no cards");
    }

    let mut report = Report::new();
    report.set("streaming", args.streaming);
    report.set("in_flight", k);
    report.set("rounds", args.rounds);
    report.set("pace", &args.pace.text);
    report.set("asked", asked.len());
    report.set("refused", refused);
    report.set("answered", answered);
    report.set("missing", missing);
    report.set("extra_messages", extra);
    report.set("exact", exact);
    report.set("fastgpt_streamed", streamed);
    report.set("elapsed_s", format!("{elapsed:.3}"));
    if !first_text.is_empty() {
        report.latency("first_text_", &first_text);
    }
    if !sent_text.is_empty() {
        report.latency("sent_text_", &sent_text);
    }
    if !complete.is_empty() {
        report.latency("complete_", &complete);
    }
    report.set("cards", ops.cards);
    report.set("card_ops", ops.ops);
    report.set(
        "card_ops_per_card",
        format!("{:.1}", if ops.cards > 0 { ops.ops as f64 / ops.cards as f64 } else { 0.0 }),
    );
    report.set("card_ops_max_1s", ops.max_per_second);
    report.set("card_ops_mean_per_s", format!("{:.2}", ops.mean_per_second));
    report.set("card_ops_rate_limited", ops.rate_limited);
    report.set("card_ops_errors", ops.other_errors);
    report.set("card_ops_error_codes", ops.codes_line());
    report.set("texts_mean", format!("{texts_mean:.1}"));
    report.set("texts_min", texts_min);
    report.set("texts_max", texts_max);
    report.set("lark_calls", calls.total);
    report.set("lark_calls_per_answer", format!("{:.1}", per_answer(calls.total)));
    report.set("lark_calls_by_api", calls.by_api_line());
    report.set("lark_rate_limited", calls.rate_limited);
    report.set("lark_cardkit_rate_limited", calls.cardkit_rate_limited);

    let mut cpu_line = Vec::new();
    let mut services_us = Some(0.0);
    for (((name, pid), before), after) in args.cpu_pids.iter().zip(&cpu_before).zip(&cpu_after) {
        let key = name.replace('-', "_");
        let per_answer = match (before, after) {
            (Some(b), Some(a)) if answered > 0 && args.clock_ticks > 0 => {
                let total_us = a.saturating_sub(*b) as f64 * 1e6 / args.clock_ticks as f64;
                report.set(&format!("cpu_{key}_ms"), format!("{:.0}", total_us / 1000.0));
                Some(total_us / answered as f64)
            }
            _ => {
                eprintln!("loadgen: cannot read the CPU time of {name} (pid {pid}) before and after the run");
                None
            }
        };
        if !name.starts_with("nats") {
            services_us = services_us.zip(per_answer).map(|(s, p)| s + p);
        }
        let shown = per_answer.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}"));
        report.set(&format!("cpu_{key}_us"), &shown);
        cpu_line.push(format!("{name} {shown}"));
    }
    if !args.cpu_pids.is_empty() {
        let services = services_us.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}"));
        report.set("cpu_services_us", &services);
        println!("cpu         per answer (µs, utime + stime): {}; services {services}", cpu_line.join(", "));
    }
    report.write(args.report.as_ref())
}

/// The answer a reply shows, without what the card adds below it (the
/// sources panel, the 👍 / 👎 buttons): a streamed card's answer element, a
/// card's first Markdown element, or a text message's text.
fn answer_text(lark: &FakeLark, reply: &SentMessage) -> Option<String> {
    let markdown = |card: &serde_json::Value| {
        let elements = card.pointer("/body/elements")?.as_array()?;
        let answer = elements
            .iter()
            .find(|e| e.get("element_id").and_then(|v| v.as_str()) == Some("answer"))
            .or_else(|| elements.first())?;
        answer.get("content")?.as_str().map(str::to_owned)
    };
    match reply.card_id() {
        Some(id) => lark.card(id).and_then(|c| markdown(&c.json)),
        None if reply.msg_type == "interactive" => markdown(&reply.content),
        None => Some(reply.text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_process_ids_and_cpu_time() {
        let pace = parse_pace("40x100ms").expect("pace");
        assert_eq!((pace.deltas, pace.every, pace.text.as_str()), (40, Duration::from_millis(100), "40x100ms"));
        assert_eq!(pace.total(), Duration::from_secs(4));
        assert_eq!(parse_pace("3x2s").map(|p| p.total()), Ok(Duration::from_secs(6)));
        for bad in ["40", "x100ms", "40x", "40x1.5s", "0x100ms", "40x100", "40x2m"] {
            assert!(parse_pace(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_named_pid("nats-server=42"), Ok(("nats-server".to_owned(), 42)));
        assert!(parse_named_pid("relay").is_err());
        assert!(parse_named_pid("a b=1").is_err());
        assert!(parse_named_pid("relay=x").is_err());
        assert!(cpu_ticks(std::process::id()).is_some());
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
