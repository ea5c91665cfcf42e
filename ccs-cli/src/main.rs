//! `ccs`: the command-line face of ccs-rs.
//!
//! - `ccs demo`: the emulator, the echo app server and a fleet of devices in one process,
//!   checked end to end.
//! - `ccs echo`: the echo app server against any endpoint.
//! - `ccs emulate`: a local CCS-compatible server (the emulator).
//! - `ccs send`: downstream messages as JSON lines in, one outcome per line out.
//! - `ccs bench`: throughput against an endpoint (by default an emulator in a separate
//!   process, so the client's own CPU time is measured alone).
//!
//! The server key is read from `CCS_API_KEY` or `--api-key-file`, never from the command line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bench;
mod common;
mod demo;
mod echo;
mod emulate;
mod runtime;
mod send;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A client and emulator for Google's Cloud Connection Server (GCM/FCM XMPP).
#[derive(Debug, Parser)]
#[command(name = "ccs", version, about)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole system in one process: the emulator, the echo app server, and a fleet of
    /// devices; checks that every message arrived and was answered exactly once.
    Demo(demo::DemoArgs),
    /// The echo app server (Google's sample): echo every upstream message back to its
    /// device, until SIGTERM or Ctrl-C.
    Echo(echo::EchoArgs),
    /// Run a local CCS emulator until SIGTERM or Ctrl-C.
    Emulate(emulate::EmulateArgs),
    /// Send downstream messages read as JSON lines; print one outcome per line.
    Send(send::SendArgs),
    /// Measure throughput, client CPU and memory.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccs: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::Emulate(args) => emulate::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ccs: {message}");
            ExitCode::from(2)
        }
    }
}
