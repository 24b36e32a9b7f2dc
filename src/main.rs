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
    short_openmp_spin();
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

/// oneDNN's OpenMP threads wait for the next convolution by spinning, 300,000 rounds by
/// default. Between two convolutions deepcnn's own kernels (batch normalization, pooling) run
/// on rayon's threads, and a spinning OpenMP thread takes one of the two cores from them. A
/// shorter spin, measured on a 2-core Xeon (images/s, median of 5, default against 10,000):
/// ResNet-18 b64 554 → 597, DenseNet b32 121 → 135, and LeNet-BN's convolutions faster on
/// oneDNN than on deepcnn's direct kernel. libgomp reads `GOMP_SPINCOUNT` once, when it is
/// loaded, before `main` runs (and the C library's start-up discards variables set earlier),
/// so the process sets it and executes itself again, once. A user's own `GOMP_SPINCOUNT` or
/// `OMP_WAIT_POLICY` is kept; where the re-execution fails, the run goes on as it is.
fn short_openmp_spin() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GOMP_SPINCOUNT").is_some() || std::env::var_os("OMP_WAIT_POLICY").is_some() {
            return;
        }
        let mut args = std::env::args_os();
        let Some(program) = args.next() else { return };
        // SAFETY: no other thread exists yet (libgomp starts its threads at the first
        // convolution).
        unsafe { std::env::set_var("GOMP_SPINCOUNT", "10000") };
        // `exec` returns only if it failed.
        let _ = std::process::Command::new("/proc/self/exe").arg0(program).args(args).exec();
        // SAFETY: as above.
        unsafe { std::env::remove_var("GOMP_SPINCOUNT") };
    }
}
