//! `sandbox`: try the bridge end to end on one machine, without Lark or FastGPT.
//!
//! `sandbox serve` runs the fake Lark Open API and the fake FastGPT on fixed
//! ports; point a channel's `lark_base_url` and `fastgpt_base_url` at them and
//! start the three services. `sandbox say "question"` then plays a Lark user:
//! it posts one encrypted, signed `im.message.receive_v1` event to the
//! ingress, as Lark would, and prints the bot's reply as the fake Lark received it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use common::lark::crypto::EncryptKey;
use lark_bridge_tests::fake_fastgpt::FakeFastGpt;
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark, SandboxMessage, SandboxPage, SandboxRegistration, Via};
use lark_bridge_tests::lark_events::{message_id_of, ChatRef, EventBuilder, Mention, SignedRequest};
use secrecy::SecretString;

#[derive(Parser)]
#[command(name = "sandbox", about = "Fake Lark and FastGPT, and a Lark user to talk to the bridge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fake Lark Open API and the fake FastGPT until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Send one message to the bot as a Lark user and print its reply.
    Say(SayArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:18080")]
    lark: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:18090")]
    fastgpt: SocketAddr,
    #[arg(long, default_value = "cli_sandbox")]
    app_id: String,
    #[arg(long, default_value = "sandbox-secret")]
    app_secret: String,
    #[arg(long, default_value = "ou_sandbox_bot")]
    bot_open_id: String,
    #[arg(long, default_value = "fastgpt-sandbox")]
    fastgpt_key: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChatKind {
    P2p,
    Group,
    Topic,
}

#[derive(clap::Args)]
struct SayArgs {
    /// The channel's Request URL on the ingress.
    #[arg(long, default_value = "http://127.0.0.1:8080/lark/sandbox/events")]
    ingress: String,
    /// The fake Lark started by `sandbox serve`.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    lark: String,
    /// The channel's Encrypt Key; without it the event is sent in plain JSON.
    #[arg(long, env = "SANDBOX_ENCRYPT_KEY")]
    encrypt_key: Option<String>,
    /// The channel's Verification Token, put in `header.token`.
    #[arg(long)]
    verification_token: Option<String>,
    #[arg(long, default_value = "cli_sandbox")]
    app_id: String,
    #[arg(long, default_value = "ou_sandbox_bot")]
    bot_open_id: String,
    /// The user speaking.
    #[arg(long, default_value = "ou_sandbox_user")]
    user: String,
    #[arg(long, value_enum, default_value = "p2p")]
    chat: ChatKind,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The question.
    #[arg(required = true, num_args = 1..)]
    question: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Say(args) => say(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = FakeApp::new(&args.app_id, &args.app_secret, &args.bot_open_id);
    let lark = FakeLark::start_on(args.lark, vec![app])
        .await
        .with_context(|| format!("cannot listen on {} for the fake Lark", args.lark))?;
    let fastgpt = FakeFastGpt::start_on(args.fastgpt, &args.fastgpt_key)
        .await
        .with_context(|| format!("cannot listen on {} for the fake FastGPT", args.fastgpt))?;
    println!(
        "fake lark:    {}  (app_id {}, app_secret {}, bot {})",
        lark.base_url(),
        args.app_id,
        args.app_secret,
        args.bot_open_id
    );
    println!("fake fastgpt: {}  (api key {})", fastgpt.base_url(), args.fastgpt_key);
    wait_for_signal().await?;
    lark.shutdown().await;
    fastgpt.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn say(args: SayArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let lark = args.lark.trim_end_matches('/');
    let question = args.question.join(" ");
    let start = fetch(&client, lark, usize::MAX / 2)
        .await
        .with_context(|| format!("cannot reach the fake Lark at {lark}: is `sandbox serve` running?"))?
        .next;

    let (chat, text, mentions) = match args.chat {
        ChatKind::P2p => (ChatRef::P2p { chat_id: "oc_sandbox_p2p".into() }, question.clone(), vec![]),
        ChatKind::Group => (
            ChatRef::Group { chat_id: "oc_sandbox_group".into() },
            format!("@_user_1 {question}"),
            vec![Mention::bot_at(1, &args.bot_open_id, "FastGPT bot")],
        ),
        ChatKind::Topic => (
            ChatRef::Topic { chat_id: "oc_sandbox_topic".into(), thread_id: "omt_sandbox_topic".into() },
            format!("@_user_1 {question}"),
            vec![Mention::bot_at(1, &args.bot_open_id, "FastGPT bot")],
        ),
    };
    let mut builder = EventBuilder::new(&args.app_id);
    if let Some(token) = &args.verification_token {
        builder = builder.token(token);
    }
    let event = builder.message(&chat, &args.user, "text", &serde_json::json!({ "text": text }), &mentions);
    let message_id = message_id_of(&event).context("built event has a message_id")?.to_owned();

    let registration = SandboxRegistration {
        message_id: message_id.clone(),
        chat_id: chat.chat_id().to_owned(),
        thread_id: chat.thread_id().map(str::to_owned),
    };
    client.post(format!("{lark}/_sandbox/register")).json(&registration).send().await?.error_for_status()?;

    let key = args.encrypt_key.map(|k| EncryptKey::new(SecretString::from(k)));
    let response = SignedRequest::now(&event, key.as_ref())
        .post_to(&client, &args.ingress)
        .await
        .with_context(|| format!("cannot reach the ingress at {}", args.ingress))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the ingress answered {status}: {body}");
    }

    let replies = wait_for_replies(&client, lark, start, &message_id, chat.chat_id(), args.timeout).await?;
    if replies.is_empty() {
        bail!(
            "no reply to {message_id} within {} s: check that the bridge's channel uses lark_base_url {lark} \
             and that relay and responder are running",
            args.timeout
        );
    }
    for reply in replies {
        if reply.text.is_empty() {
            println!("[{}] {}", reply.msg_type, reply.content);
        } else {
            println!("{}", reply.text);
        }
    }
    Ok(())
}

async fn fetch(client: &reqwest::Client, lark: &str, after: usize) -> anyhow::Result<SandboxPage> {
    let url = format!("{lark}/_sandbox/messages?after={after}");
    Ok(client.get(url).send().await?.error_for_status()?.json().await?)
}

/// Polls until the first reply arrives, then until nothing has changed for a
/// moment (an answer split in parts, or a placeholder being replaced).
async fn wait_for_replies(
    client: &reqwest::Client,
    lark: &str,
    start: usize,
    message_id: &str,
    chat_id: &str,
    timeout_secs: u64,
) -> anyhow::Result<Vec<SandboxMessage>> {
    const QUIET: Duration = Duration::from_millis(1500);
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last_change = Instant::now();
    let mut last_signature = (0, 0);
    loop {
        let page = fetch(client, lark, start).await?;
        let replies: Vec<SandboxMessage> = page
            .messages
            .into_iter()
            .filter(|m| match &m.via {
                Via::Reply { message_id: target } => target == message_id,
                Via::Chat { receive_id } => receive_id == chat_id,
            })
            .collect();
        let signature = (replies.len(), replies.iter().map(|m| m.updates).sum::<usize>());
        if signature != last_signature {
            last_signature = signature;
            last_change = Instant::now();
        }
        let quiet = !replies.is_empty() && last_change.elapsed() >= QUIET;
        if quiet || Instant::now() >= deadline {
            return Ok(replies);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
