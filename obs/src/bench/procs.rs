//! What each process of the benchmarked stack spends: CPU seconds (user + system, from
//! `/proc/<pid>/stat`) and peak resident memory (`VmHWM`), so a workload's cost can be
//! split between the pipeline, the broker, the engine and the peer.

use std::collections::BTreeMap;

/// A process of the stack, by the role it plays.
#[derive(Clone, Debug)]
pub struct Watched {
    /// What it is (`obs`, `broker`, `engine`, `prometheus`, `load generator`).
    pub role: String,
    /// Its pid.
    pub pid: u32,
}

/// Parses `role=pid,role=pid`; this process is added as the load generator.
pub fn parse(spec: &str) -> anyhow::Result<Vec<Watched>> {
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (role, pid) = part.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--pids takes role=pid pairs separated by commas, got {part:?}")
        })?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--pids: {pid:?} is not a process id"))?;
        out.push(Watched {
            role: role.trim().to_string(),
            pid,
        });
    }
    out.push(Watched {
        role: "load generator".into(),
        pid: std::process::id(),
    });
    Ok(out)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux), asked
/// once.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds each watched process has used so far (absent if it is gone).
pub fn cpu_seconds(watched: &[Watched]) -> BTreeMap<String, f64> {
    let tick = ticks_per_second();
    watched
        .iter()
        .filter_map(|w| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid)).ok()?;
            // Fields after the command (which may hold spaces) start after the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some((w.role.clone(), ticks / tick))
        })
        .collect()
}

/// Peak resident memory of each watched process so far, in bytes.
pub fn peak_rss(watched: &[Watched]) -> BTreeMap<String, u64> {
    watched
        .iter()
        .filter_map(|w| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).ok()?;
            let kb = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?;
            Some((w.role.clone(), kb * 1024))
        })
        .collect()
}

/// `after - before` per role.
pub fn spent(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(role, a)| (role.clone(), a - before.get(role).copied().unwrap_or(0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_watched_and_measured() {
        let w = parse("").unwrap();
        assert_eq!(w.len(), 1);
        let before = cpu_seconds(&w);
        // Work until the kernel has counted some of it (ticks are 10 ms), at most 10 s.
        let started = std::time::Instant::now();
        let (mut x, mut used) = (0u64, 0.0);
        while used == 0.0 && started.elapsed().as_secs() < 10 {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            used = spent(&before, &cpu_seconds(&w))["load generator"];
        }
        std::hint::black_box(x);
        assert!(used > 0.0, "no CPU time counted after 10 s of work");
        assert!(peak_rss(&w)["load generator"] > 1 << 20);
    }

    #[test]
    fn a_malformed_pid_list_is_named() {
        let e = parse("obs=12,broker").unwrap_err().to_string();
        assert!(e.contains("role=pid"), "{e}");
        let e = parse("obs=x").unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
    }
}
