//! CPU time spent by PostgreSQL servers and by this process's threads, read from Linux's
//! `/proc`, so that benchmarks can say where the time of an operation goes (database
//! servers, the node, the load generator) and not only how many operations ran.
//!
//! A server's CPU is its postmaster's own time, the time of the children it has already
//! reaped (`cutime`/`cstime`), and the time of its live children (backends, WAL sender,
//! background workers). Sampling the sum before and after a measurement gives the CPU
//! the server spent during it, whether or not backends exited in between.

use std::time::Duration;

/// Name given to the threads of the load generator's runtime, so that their CPU time
/// can be told apart from the rest of the process.
pub(crate) const LOAD_THREAD: &str = "bench-load";

/// CPU consumed so far, split by who consumed it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSample {
    /// All PostgreSQL servers given to [`CpuClock::new`].
    pub postgres: Duration,
    /// This process's threads named [`LOAD_THREAD`].
    pub load: Duration,
    /// This process's other threads (the node, when one runs in-process).
    pub rest: Duration,
}

impl std::ops::Add for CpuSample {
    type Output = CpuSample;
    fn add(self, other: CpuSample) -> CpuSample {
        CpuSample {
            postgres: self.postgres + other.postgres,
            load: self.load + other.load,
            rest: self.rest + other.rest,
        }
    }
}

impl std::ops::Sub for CpuSample {
    type Output = CpuSample;
    fn sub(self, earlier: CpuSample) -> CpuSample {
        CpuSample {
            postgres: self.postgres.saturating_sub(earlier.postgres),
            load: self.load.saturating_sub(earlier.load),
            rest: self.rest.saturating_sub(earlier.rest),
        }
    }
}

/// Reads CPU time of a set of PostgreSQL servers (by postmaster pid) and of this process.
#[derive(Debug, Clone)]
pub(crate) struct CpuClock {
    postmasters: Vec<i32>,
    ticks_per_second: f64,
}

impl CpuClock {
    pub fn new(postmasters: impl IntoIterator<Item = Option<i32>>) -> Self {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|ticks| *ticks > 0)
            // USER_HZ, which is 100 on every Linux architecture we run on.
            .unwrap_or(100);
        Self {
            postmasters: postmasters.into_iter().flatten().collect(),
            ticks_per_second: ticks as f64,
        }
    }

    /// CPU consumed until now. Best effort: a process that vanishes between listing and
    /// reading is skipped, so figures are accurate to a few milliseconds.
    pub fn sample(&self) -> CpuSample {
        let mut postgres_ticks = 0u64;
        let processes = all_processes();
        for &postmaster in &self.postmasters {
            if let Some(own) = processes.iter().find(|p| p.pid == postmaster) {
                postgres_ticks += own.ticks + own.children_ticks;
            }
            postgres_ticks += processes
                .iter()
                .filter(|p| p.ppid == postmaster)
                .map(|p| p.ticks)
                .sum::<u64>();
        }
        let (mut load, mut rest) = (0u64, 0u64);
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let Some(stat) = read_stat(&path.join("stat")) else {
                    continue;
                };
                if stat.comm.starts_with(LOAD_THREAD) {
                    load += stat.ticks;
                } else {
                    rest += stat.ticks;
                }
            }
        }
        CpuSample {
            postgres: self.duration(postgres_ticks),
            load: self.duration(load),
            rest: self.duration(rest),
        }
    }

    /// CPU of this process's threads whose name starts with `prefix`.
    pub fn threads(&self, prefix: &str) -> Duration {
        let mut ticks = 0;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                if let Some(stat) = read_stat(&task.path().join("stat"))
                    && stat.comm.starts_with(prefix)
                {
                    ticks += stat.ticks;
                }
            }
        }
        self.duration(ticks)
    }

    /// CPU of process `pid` and its children, live and reaped (nginx's master and
    /// workers).
    pub fn process_tree(&self, pid: i32) -> Duration {
        let processes = all_processes();
        let own = processes
            .iter()
            .find(|p| p.pid == pid)
            .map_or(0, |p| p.ticks + p.children_ticks);
        let children: u64 = processes
            .iter()
            .filter(|p| p.ppid == pid)
            .map(|p| p.ticks)
            .sum();
        self.duration(own + children)
    }

    fn duration(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_second)
    }
}

/// CPU microseconds per operation.
pub(crate) fn micros_per_op(cpu: Duration, ops: u64) -> f64 {
    if ops == 0 {
        return 0.0;
    }
    cpu.as_secs_f64() * 1e6 / ops as f64
}

#[derive(Debug)]
struct Stat {
    pid: i32,
    ppid: i32,
    comm: String,
    /// utime + stime.
    ticks: u64,
    /// cutime + cstime: reaped children.
    children_ticks: u64,
}

fn all_processes() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<i32>().is_ok())
        .filter_map(|entry| read_stat(&entry.path().join("stat")))
        .collect()
}

/// Parses `/proc/PID/stat` (see proc(5)); the command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn read_stat(path: &std::path::Path) -> Option<Stat> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    // After ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        comm,
        ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_burns_cpu_it_can_see() {
        let clock = CpuClock::new([]);
        let before = clock.sample();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // However loaded the machine, this thread gets 30 ms of CPU within a minute.
        let spent = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let spent = clock.sample() - before;
            if spent.rest >= Duration::from_millis(30)
                || started.elapsed() > Duration::from_secs(60)
            {
                break spent;
            }
        };
        assert!(spent.rest >= Duration::from_millis(30), "{spent:?}");
        assert_eq!(spent.postgres, Duration::ZERO);
        assert_eq!(spent.load, Duration::ZERO, "no thread here is the load's");
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stat");
        let mut line = String::from("42 (post gres) x) S 7");
        for n in 5..=17 {
            line.push_str(&format!(" {n}"));
        }
        line.push_str(" 0 0\n");
        std::fs::write(&path, line).expect("write");
        let stat = read_stat(&path).expect("parses");
        assert_eq!((stat.pid, stat.ppid), (42, 7));
        assert_eq!(stat.comm, "post gres) x");
        assert_eq!(stat.ticks, 14 + 15);
        assert_eq!(stat.children_ticks, 16 + 17);
    }
}
