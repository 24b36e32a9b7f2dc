//! The machine, in one line, as run files and reports record it: the CPU's model, the cores
//! deepcnn may use, the vector instruction sets its kernels and oneDNN choose between, and the
//! memory. Speed figures mean little without it.

/// The instruction sets that change which kernels run, by their `/proc/cpuinfo` flag.
const INSTRUCTION_SETS: [(&str, &str); 5] = [
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_bf16", "AVX512_BF16"),
    ("amx_bf16", "AMX-BF16"),
    ("asimd", "NEON"),
];

/// "Intel(R) Xeon(R) Processor, 2 cores, AVX2 AVX-512 AVX512_BF16 AMX-BF16, 23 GiB": what this
/// machine says of itself (parts it cannot read are left out).
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut parts = Vec::new();
    parts.push(cpu_model(&cpuinfo).unwrap_or(std::env::consts::ARCH).to_string());
    if let Ok(cores) = std::thread::available_parallelism() {
        parts.push(crate::report::plural(cores.get(), "core", "cores"));
    }
    let sets = instruction_sets(&cpuinfo);
    if !sets.is_empty() {
        parts.push(sets.join(" "));
    }
    if let Some(bytes) = crate::memory::machine_memory() {
        parts.push(format!("{} GiB", bytes >> 30));
    }
    parts.join(", ")
}

fn cpu_model(cpuinfo: &str) -> Option<&str> {
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim())
}

fn instruction_sets(cpuinfo: &str) -> Vec<&'static str> {
    let Some(flags) = cpuinfo.lines().find(|l| l.starts_with("flags") || l.starts_with("Features")) else {
        return Vec::new();
    };
    let flags: Vec<&str> = flags.split_once(':').map_or("", |(_, f)| f).split_whitespace().collect();
    INSTRUCTION_SETS.iter().filter(|(flag, _)| flags.contains(flag)).map(|&(_, name)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_model_and_the_instruction_sets_from_cpuinfo() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9R45\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n";
        assert_eq!(cpu_model(cpuinfo), Some("AMD EPYC 9R45"));
        assert_eq!(instruction_sets(cpuinfo), ["AVX2", "AVX-512", "AVX512_BF16"]);
        // A flag is matched whole: avx512_bf16 is not amx_bf16, avx512f not avx512fp16.
        assert_eq!(instruction_sets("flags : avx512fp16 avx2\n"), ["AVX2"]);
        assert!(instruction_sets("no flags here\n").is_empty());
        assert!(describe().contains("core"), "{}", describe());
    }
}
