//! The command line of each binary.
//!
//! Every service takes `--config FILE` (or `LARK_BRIDGE_CONFIG`), `--check`
//! and `--help` ([`ServiceArgs`]); the responder also has the operator's
//! dead-letter commands ([`DeadLetterArgs`]). Each binary parses its own
//! [`Cli`], so `ingress --help` lists only what the ingress understands and a
//! responder flag given to another service is an error, not a surprise start.

use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::config::{ConfigError, Settings};

/// The flags every service takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The TOML configuration shared by the three services.
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Diagnose this service's dependencies, print a checklist and exit
    /// (0 only when every check passed).
    #[arg(long)]
    pub check: bool,
    /// Ask this service, running on this machine with the same
    /// configuration, whether it is ready (GET /readyz on its listen port),
    /// and exit 0 if so: a container's health check (the image has no shell
    /// and no curl).
    #[arg(long, conflicts_with = "check")]
    pub ready: bool,
}

impl ServiceArgs {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.config.as_deref())
    }
}

/// The responder's operator commands: what could not be delivered, and
/// sending it again once the cause is fixed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeadLetterArgs {
    /// List the dead letters waiting, with their reasons, and exit.
    #[arg(long, conflicts_with = "check")]
    pub dead_letters: bool,
    /// Publish the dead letters back where they died (after fixing the
    /// cause), delete them, and exit.
    #[arg(long, conflicts_with = "check")]
    pub redrive: bool,
    /// Only the dead letters of this channel (with --dead-letters or --redrive).
    #[arg(long, value_name = "ID", requires = "dead_letter_command")]
    pub channel: Option<String>,
}

impl DeadLetterArgs {
    /// True when the responder runs an operator command instead of the service.
    pub fn requested(&self) -> bool {
        self.dead_letters || self.redrive
    }
}

use crate::service_name::Service;

/// What each binary does (the first line of `--help`).
fn about(binary: Service) -> &'static str {
    match binary {
        Service::Ingress => "lark-bridge ingress: Lark's event callbacks in, JetStream messages out",
        Service::Relay => "lark-bridge relay: Lark messages in, FastGPT questions out, replies queued",
        Service::Responder => "lark-bridge responder: replies sent to Lark, and the dead-letter commands",
    }
}

/// One binary's command line: the service flags, and the dead-letter
/// commands for the responder only.
#[derive(Debug, Clone)]
pub struct Cli {
    pub service: ServiceArgs,
    /// Always off for the ingress and the relay (they do not take the flags).
    pub dead_letters: DeadLetterArgs,
}

/// The ingress's and the relay's flags.
#[derive(Debug, clap::Parser)]
struct ServiceCli {
    #[command(flatten)]
    service: ServiceArgs,
}

/// The responder's flags.
#[derive(Debug, clap::Parser)]
#[command(group = clap::ArgGroup::new("dead_letter_command").args(["dead_letters", "redrive"]).multiple(true))]
struct ResponderCli {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    dead_letters: DeadLetterArgs,
}

impl Cli {
    /// `binary`'s clap command, named and described for it.
    pub fn command(binary: Service) -> clap::Command {
        let command = match binary {
            Service::Ingress | Service::Relay => ServiceCli::command(),
            Service::Responder => ResponderCli::command(),
        };
        command.name(binary.name()).bin_name(binary.name()).about(about(binary))
    }

    /// Parses the process's arguments for `binary`; on an error or `--help`,
    /// prints and exits as clap does.
    /// `--ready` is answered here, for every binary alike: the probe's
    /// verdict is the exit code.
    pub fn parse(binary: Service) -> Self {
        let cli = Self::try_parse_from(binary, std::env::args_os()).unwrap_or_else(|e| e.exit());
        if cli.service.ready {
            std::process::exit(match cli.settings().map_err(|e| e.to_string()).and_then(|s| probe_ready(binary, &s)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{}: not ready: {e}", binary.name());
                    1
                }
            });
        }
        cli
    }

    pub fn try_parse_from<I, T>(binary: Service, args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command(binary).try_get_matches_from(args)?;
        Ok(match binary {
            Service::Ingress | Service::Relay => {
                let cli = ServiceCli::from_arg_matches(&matches)?;
                Cli { service: cli.service, dead_letters: DeadLetterArgs::default() }
            }
            Service::Responder => {
                let cli = ResponderCli::from_arg_matches(&matches)?;
                Cli { service: cli.service, dead_letters: cli.dead_letters }
            }
        })
    }

    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.service.settings()
    }
}

/// `GET /readyz` on `binary`'s listen address (loopback when it listens on
/// every address); Ok when it answers 200.
pub fn probe_ready(binary: Service, settings: &Settings) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let mut addr = match binary {
        Service::Ingress => settings.ingress.listen,
        Service::Relay => settings.relay.listen,
        Service::Responder => settings.responder.listen,
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("no answer");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("http://{addr}/readyz answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    const ALL: [Service; 3] = [Service::Ingress, Service::Relay, Service::Responder];

    fn help(binary: Service) -> String {
        Cli::command(binary).render_long_help().to_string()
    }

    #[test]
    fn every_command_is_well_formed() {
        for b in ALL {
            Cli::command(b).debug_assert();
        }
        ServiceCli::command().debug_assert();
        ResponderCli::command().debug_assert();
    }

    #[test]
    fn only_the_responder_lists_the_dead_letter_commands() {
        for b in [Service::Ingress, Service::Relay] {
            let h = help(b);
            assert!(h.contains("--config") && h.contains("--check"), "{h}");
            for flag in ["--dead-letters", "--redrive", "--channel", "responder"] {
                assert!(!h.contains(flag), "{} --help lists {flag}:\n{h}", b.name());
            }
        }
        let h = help(Service::Responder);
        for flag in ["--config", "--check", "--dead-letters", "--redrive", "--channel"] {
            assert!(h.contains(flag), "responder --help lacks {flag}:\n{h}");
        }
    }

    #[test]
    fn help_texts_end_in_whole_sentences() {
        let h = Cli::command(Service::Responder).render_help().to_string();
        let channel = h.lines().find(|l| l.contains("--channel")).expect("a --channel line");
        assert!(channel.contains("Only the dead letters of this channel (with --dead-letters or --redrive)"), "{h}");
        assert!(h.starts_with("lark-bridge responder: "), "{h}");
    }

    #[test]
    fn a_responder_flag_is_an_error_elsewhere() {
        for b in [Service::Ingress, Service::Relay] {
            for flag in ["--dead-letters", "--redrive"] {
                let err = Cli::try_parse_from(b, [b.name(), flag]).expect_err("not a flag of this binary");
                assert_eq!(err.kind(), ErrorKind::UnknownArgument, "{} {flag}", b.name());
            }
        }
    }

    #[test]
    fn the_responder_parses_its_commands() {
        let cli =
            Cli::try_parse_from(Service::Responder, ["responder", "--config", "c.toml", "--redrive", "--channel", "x"])
                .expect("parses");
        assert!(cli.dead_letters.redrive && cli.dead_letters.requested());
        assert_eq!(cli.dead_letters.channel.as_deref(), Some("x"));
        assert_eq!(cli.service.config.as_deref(), Some(std::path::Path::new("c.toml")));

        let plain = Cli::try_parse_from(Service::Responder, ["responder", "--check"]).expect("parses");
        assert!(plain.service.check && !plain.dead_letters.requested());

        let alone =
            Cli::try_parse_from(Service::Responder, ["responder", "--channel", "x"]).expect_err("needs a command");
        assert_eq!(alone.kind(), ErrorKind::MissingRequiredArgument);
        let both = Cli::try_parse_from(Service::Responder, ["responder", "--check", "--dead-letters"])
            .expect_err("one thing at a time");
        assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn ready_asks_the_services_readyz_on_loopback() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let server = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 Service Unavailable\r\n\r\n"] {
                let (mut conn, _) = listener.accept().expect("the probe connects");
                let mut request = [0u8; 256];
                let n = conn.read(&mut request).expect("a request");
                paths.push(String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or("").to_owned());
                conn.write_all(answer.as_bytes()).expect("answered");
            }
            paths
        });
        let toml = format!(
            "[nats]\nnamespace = \"t1\"\n[ingress]\nlisten = \"0.0.0.0:{port}\"\n[[channels]]\nid = \"c\"\napp_id = \"cli_a\"\napp_secret = \"s\"\n\
             encrypt_key = \"ek\"\nfastgpt_base_url = \"http://127.0.0.1:3000/api\"\nfastgpt_api_key = \"k\"\n"
        );
        let settings = Settings::from_toml_with_env(&toml, &Default::default()).expect("valid");
        assert_eq!(probe_ready(Service::Ingress, &settings), Ok(()), "0.0.0.0 is asked on loopback");
        let not_ready = probe_ready(Service::Ingress, &settings).expect_err("503");
        assert!(not_ready.contains("503"), "{not_ready}");
        assert_eq!(server.join().expect("server"), vec!["GET /readyz HTTP/1.0"; 2]);
    }
}
