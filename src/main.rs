//! The `deepcnn` binary: parse flags, run, report errors as one line and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use deepcnn::cli::{run, Cli};

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`deepcnn eval --json | head`): not an error of ours.
        Err(e) if e.chain().any(is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
/// time). Serving them from the heap and keeping its top instead makes the memory stay put; the
/// process's peak use is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists. 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
