//! The `openshell` command.

use std::process::ExitCode;

use clap::Parser;
use openshell_worker::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    run(Cli::parse()).await
}
