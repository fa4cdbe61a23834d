//! Runs the TGI emulator standalone, e.g. as the upstream of `warden up` on a laptop:
//! `cargo run -p warden-testkit --bin tgi-emulator -- --listen 127.0.0.1:3000`

use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use warden_testkit::{EmulatorOptions, TgiEmulator};

#[derive(Debug, Parser)]
#[command(about = "An emulator of Hugging Face text-generation-inference, for trying Warden")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Model id reported by /info and /v1/models.
    #[arg(long)]
    model_id: Option<String>,
    /// Delay before each streamed token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let args = Args::parse();
    let mut options = EmulatorOptions {
        token_delay: Duration::from_millis(args.token_delay_ms),
        ..EmulatorOptions::default()
    };
    if let Some(model_id) = args.model_id {
        options.model_id = model_id;
    }
    let emulator = TgiEmulator::serve(TcpListener::bind(&args.listen).await?, options).await?;
    tracing::info!(address = %emulator.address(), "tgi emulator listening");
    tokio::select! {
        () = emulator.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
