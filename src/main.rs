//! The `deepcnn` binary: parse flags, run, report errors as one line and a non-zero exit
//! (2 for flags that do not parse, 1 for everything else).

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use deepcnn::cli::{error_line, run, Cli};
use deepcnn::memory::ExitOnAllocationFailure;

/// An allocation that fails ends the process with a one-line error instead of an abort.
#[global_allocator]
static ALLOCATOR: ExitOnAllocationFailure = ExitOnAllocationFailure;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("error: a command is required: train, eval, predict, plot, import, export, summary or bench (see --help)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {}", flag_error_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`deepcnn eval --json | head`): not an error of ours.
        Err(e) if e.chain().any(is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// clap's error as one line: its first paragraph (the message and, for missing arguments, their
/// names), without the usage block, and where to read more.
fn flag_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = first.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see --help)")
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    // serde_json wraps the io::Error of a failed write without listing it as the source.
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == BrokenPipe)
        || e.downcast_ref::<serde_json::Error>().is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
}

/// A training step allocates and frees the same large tensors (megabytes each) every time.
/// By default glibc gives such blocks back to the system when they are freed, and the next
/// step takes thousands of page faults to get them again (LeNet-BN: 3,400 a step, 15% of its
/// time). Serving every block from the heap and keeping its top instead makes the memory stay
/// put; the process's peak use is unchanged. Raising the mmap threshold is not enough: glibc
/// caps it at 32 MiB, and the book's DenseNet batch (256 at 96×96) has tensors of 150 MB,
/// which cost it a quarter of its speed (84 against 112 images/s, 2.9 against 1.2 million page
/// faults in 5 steps, on a 2-core Xeon).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
