//! The `deepcnn` binary: parse flags, run, report errors as one line and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use deepcnn::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
