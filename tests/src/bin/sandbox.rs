//! `sandbox`: try the bridge end to end on one machine, without Lark or FastGPT.
//!
//! `sandbox serve` runs the fake Lark Open API and the fake FastGPT on fixed
//! ports; point a channel's `lark_base_url` and `fastgpt_base_url` at them and
//! start the three services. `sandbox say "question"` then plays a Lark user:
//! it posts one encrypted, signed `im.message.receive_v1` event to the
//! ingress, as Lark would, and prints the bot's reply as the fake Lark received it;
//! `sandbox say --image PATH` or `--file PATH` sends an image or a file
//! message instead (it takes no chat commands: those are `sandbox chat`'s).
//! `sandbox chat` is a terminal chat with the bot (private chat, group with
//! @bot, topic; `Reset`), with a line editor on a terminal and whole lines
//! from a pipe: see [`lark_bridge_tests::sandbox_chat`]. Its question cards
//! (FastGPT user-select and form nodes) are answered as in Lark: a choice's
//! number clicks its button, a form is filled in field by field, and the
//! click goes to the bridge as Lark's `card.action.trigger` callback.
//! `/image PATH` and `/file PATH` send an image or a file from the local disk.
//!
//! The fake FastGPT echoes, and answers hints in the question: `select:` (a
//! user-select app), `form:` (a form app), `select-nested:` / `form-loop:`
//! (the node in a child app or a loop), `markdown`, `stream:NxD`,
//! `stream-long:BYTES` (see [`lark_bridge_tests::fake_fastgpt`]); to images
//! and files it answers with what it received (`Received: image image/png, 48213 bytes`).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use lark_bridge_tests::fake_fastgpt::FakeFastGpt;
use lark_bridge_tests::fake_lark::{FakeApp, FakeLark};
use lark_bridge_tests::lark_events::ChatRef;
use lark_bridge_tests::sandbox_chat::{
    self, Arrival, Attachment, AttachmentKind, ChatOptions, LarkUser, LineEditor, Target, Timing,
};
use lark_bridge_tests::sandbox_chat::{
    DEFAULT_APP_ID, DEFAULT_BOT_OPEN_ID, DEFAULT_ENCRYPT_KEY, DEFAULT_INGRESS, DEFAULT_LARK, DEFAULT_VERIFICATION_TOKEN,
};

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
    /// Chat with the bot as a Lark user: private chat, group or topic (a line editor on a
    /// terminal, or lines from a pipe; /help).
    Chat(ChatArgs),
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
    /// The channel's Verification Token, put in the card callbacks the fake Lark sends.
    #[arg(long, default_value = DEFAULT_VERIFICATION_TOKEN)]
    verification_token: String,
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
    #[command(flatten)]
    target: TargetArgs,
    /// The user speaking.
    #[arg(long, default_value = "ou_sandbox_user")]
    user: String,
    #[arg(long, value_enum, default_value = "p2p")]
    chat: ChatKind,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Send the image at PATH as an image message (uploaded to the fake Lark first; at most 100 MB).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["file", "question"])]
    image: Option<String>,
    /// Send the file at PATH (PDF, Word, text...) as a file message (uploaded to the fake Lark
    /// first; at most 100 MB).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["image", "question"])]
    file: Option<String>,
    /// The question (a text message; an image or file message carries none).
    #[arg(required_unless_present_any = ["image", "file"], num_args = 1..)]
    question: Vec<String>,
}

/// Where the bridge and the fake Lark are, and the channel's keys: the
/// sandbox's by default.
#[derive(clap::Args)]
struct TargetArgs {
    /// The channel's Request URL on the ingress.
    #[arg(long, default_value = DEFAULT_INGRESS)]
    ingress: String,
    /// The fake Lark started by `sandbox serve` (the channel's lark_base_url).
    #[arg(long, default_value = DEFAULT_LARK)]
    lark: String,
    /// The channel's Encrypt Key ("" sends plain JSON).
    #[arg(long, env = "SANDBOX_ENCRYPT_KEY", default_value = DEFAULT_ENCRYPT_KEY)]
    encrypt_key: String,
    /// The channel's Verification Token, put in `header.token` ("" for none).
    #[arg(long, default_value = DEFAULT_VERIFICATION_TOKEN)]
    verification_token: String,
    #[arg(long, default_value = DEFAULT_APP_ID)]
    app_id: String,
    /// The bot's open_id, mentioned in groups and topics.
    #[arg(long, default_value = DEFAULT_BOT_OPEN_ID)]
    bot_open_id: String,
}

impl From<TargetArgs> for Target {
    fn from(a: TargetArgs) -> Self {
        Target {
            ingress: a.ingress,
            lark: a.lark,
            encrypt_key: Some(a.encrypt_key).filter(|k| !k.is_empty()),
            verification_token: Some(a.verification_token).filter(|t| !t.is_empty()),
            app_id: a.app_id,
            bot_open_id: a.bot_open_id,
        }
    }
}

#[derive(clap::Args)]
struct ChatArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Say(args) => say(args).await,
        Command::Chat(args) => chat(args).await,
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
    let app = FakeApp::new(&args.app_id, &args.app_secret, &args.bot_open_id)
        .with_verification_token(&args.verification_token);
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
    println!("              hints in a question: select: (choose a product), form: (fill in a form), markdown");
    println!("              images and files (sandbox chat's /image PATH, /file PATH): it says what it received");
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
    let target = Target::from(args.target);
    let chat = match args.chat {
        ChatKind::P2p => ChatRef::P2p { chat_id: "oc_sandbox_p2p".into() },
        ChatKind::Group => ChatRef::Group { chat_id: "oc_sandbox_group".into() },
        ChatKind::Topic => ChatRef::Topic { chat_id: "oc_sandbox_topic".into(), thread_id: "omt_sandbox_topic".into() },
    };
    // What is sent is read (and refused, with the reason) before anything is contacted.
    let attachment = match (&args.image, &args.file) {
        (Some(path), _) => Some(Attachment::read(AttachmentKind::Image, path).await?),
        (_, Some(path)) => Some(Attachment::read(AttachmentKind::File, path).await?),
        _ => None,
    };
    let question = args.question.join(" ");
    if attachment.is_none() {
        if let Some(why) = sandbox_chat::refusal(&chat, &question) {
            bail!(why);
        }
    }
    let mut user = LarkUser::connect(target).await?;
    let message_id = match &attachment {
        Some(attachment) => user.send_attachment(&chat, &args.user, attachment).await?.0,
        None => user.send(&chat, &args.user, &question).await?,
    };
    let timing = Timing { timeout: Duration::from_secs(args.timeout), ..Timing::default() };
    // Each part is printed the moment it arrives.
    let mut wait = user.wait_for(&message_id, timing);
    while let Some(arrival) = user.next_arrival(&mut wait).await? {
        let Arrival::Reply { message: reply, .. } = arrival else { continue };
        if reply.text.is_empty() {
            println!("[{}] {}", reply.msg_type, reply.content);
        } else {
            println!("{}", reply.text);
        }
    }
    if wait.parts == 0 {
        bail!(
            "no reply to {message_id} within {} s: check that the bridge's channel uses lark_base_url {} \
             and that relay and responder are running (logs: .sandbox/logs/*.log)",
            args.timeout,
            user.target().lark
        );
    }
    Ok(())
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let target = Target::from(args.target);
    let timing = Timing { timeout: Duration::from_secs(args.timeout), ..Timing::default() };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let options = ChatOptions { timing, echo_input: !std::io::stdin().is_terminal(), color };
    let mut out = std::io::stdout();
    if terminal {
        // Arrows, history and whole pastes: a line editor, not the terminal's line discipline.
        sandbox_chat::run_with(target, options, LineEditor::start()?, &mut out).await
    } else {
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        sandbox_chat::run(target, options, input, &mut out).await
    }
}
