//! Memory: what a command will need, estimated before it allocates, against what the machine
//! has; and, as the last line of defence, an allocator that turns a failed allocation into a
//! one-line error instead of an abort.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::{self, Write as _};
use std::io::Write as _;

/// A command that would need more memory than the machine has.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} would need about {} of memory, and this machine has {}; {hint}",
    Bytes(*.estimate), Bytes(*.available)
)]
pub struct MemoryError {
    /// What was asked for, in the user's terms ("resnet18 training, batch 256 at 10000×10000").
    pub what: String,
    pub estimate: u64,
    pub available: u64,
    /// Which flag to change.
    pub hint: &'static str,
}

/// The machine's memory in bytes (`MemTotal`), or `None` where it cannot be read.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses `estimate` bytes for `what` when the machine has less memory. Where the machine's
/// memory cannot be read, nothing is refused (the allocator below still catches a failure).
pub fn check(what: impl FnOnce() -> String, estimate: u64, hint: &'static str) -> Result<(), MemoryError> {
    match machine_memory() {
        Some(available) if estimate > available => Err(MemoryError { what: what(), estimate, available, hint }),
        _ => Ok(()),
    }
}

/// A byte count for people: "3.2 GB", "870 MB", "12 TB".
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1000.0 && unit + 1 < units.len() {
            value /= 1000.0;
            unit += 1;
        }
        match unit {
            0 => write!(f, "{} bytes", self.0),
            _ if value < 10.0 => write!(f, "{value:.1} {}", units[unit]),
            _ => write!(f, "{value:.0} {}", units[unit]),
        }
    }
}

/// The system allocator, except that an allocation it cannot serve ends the process with
/// `error: out of memory ...` and exit code 1, where Rust would print "memory allocation of N
/// bytes failed" and abort with a core dump. Estimates ([`check`]) refuse what is plainly too
/// large before any work; this catches what they miss.
pub struct ExitOnAllocationFailure;

impl ExitOnAllocationFailure {
    #[cold]
    fn fail(size: usize) -> ! {
        // No allocation from here on: the message is formatted into a buffer on the stack.
        let mut message = StackString::<200>::new();
        let _ = writeln!(
            message,
            "error: out of memory: an allocation of {} failed (this machine has {}); try a smaller batch or image size",
            Bytes(size as u64),
            Bytes(machine_memory_without_allocating())
        );
        let _ = std::io::stderr().write_all(message.as_bytes());
        exit_now(1)
    }
}

// SAFETY: every method forwards to `System` with the same arguments; only a null result (a
// failed allocation) is handled differently, by ending the process.
unsafe impl GlobalAlloc for ExitOnAllocationFailure {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if p.is_null() {
            Self::fail(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            Self::fail(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            Self::fail(new_size);
        }
        p
    }
}

/// `MemTotal` read with the C library only: the Rust allocator just failed.
fn machine_memory_without_allocating() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: sysinfo fills the zeroed struct it is given.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        if unsafe { libc::sysinfo(&mut info) } == 0 {
            return info.totalram as u64 * info.mem_unit as u64;
        }
    }
    0
}

/// Ends the process at once, without running exit handlers that might allocate.
fn exit_now(code: i32) -> ! {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: _exit takes no pointers and does not return.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    std::process::exit(code)
}

/// A fixed-capacity string on the stack; what does not fit is cut off.
struct StackString<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackString<N> {
    fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> fmt::Write for StackString<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_like_a_person_writes_them() {
        assert_eq!(Bytes(512).to_string(), "512 bytes");
        assert_eq!(Bytes(3_200_000_000).to_string(), "3.2 GB");
        assert_eq!(Bytes(870_000_000).to_string(), "870 MB");
        assert_eq!(Bytes(12_000_000_000_000).to_string(), "12 TB");
    }

    #[test]
    fn the_machine_has_memory_and_a_larger_estimate_is_refused() {
        let total = machine_memory().expect("/proc/meminfo on Linux");
        assert!(total > 1 << 28, "{total}");
        assert_eq!(machine_memory_without_allocating() / (1 << 20), total / (1 << 20));
        assert!(check(|| "x".into(), total / 2, "").is_ok());
        let e = check(|| "resnet18 training".into(), total * 4, "use a smaller --batch-size").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("resnet18 training would need about ") && text.ends_with("; use a smaller --batch-size"),
            "{text}"
        );
    }

    #[test]
    fn a_stack_string_cuts_what_does_not_fit() {
        let mut s = StackString::<5>::new();
        s.write_str("abcdefgh").unwrap();
        assert_eq!(s.as_bytes(), b"abcde");
    }
}
