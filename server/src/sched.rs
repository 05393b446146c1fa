//! Real-time scheduling for a process's threads: `serve --realtime <PRIORITY>` (and the load
//! generator's `--realtime`).
//!
//! Why: the service answers in a few hundred microseconds, but on a machine it shares with other
//! daemons an ordinary (`SCHED_OTHER`) thread that is ready to run can wait milliseconds while
//! another process's thread uses its slice (measured on the 2-core CI host: RabbitMQ's Erlang
//! schedulers, DAMON's `kdamond`, a periodic `erl` start took 1-8 ms at a time, 0.3-3% of each
//! core). Under `SCHED_RR` the service's threads run ahead of every ordinary thread as soon as
//! they are ready, so its tail latency is its own, not the neighbours'.
//!
//! Invariant: [`run_realtime`] is called on the main thread before any other thread starts, so
//! every thread the process creates later inherits the policy (threads inherit their creator's
//! policy and priority on Linux) — none is left behind at the ordinary policy. The kernel's
//! real-time throttling (`/proc/sys/kernel/sched_rt_runtime_us`, 95% by default) still leaves
//! the rest of the machine a share if a thread ever spins.

use crate::error::{Error, Result};

/// The lowest and highest `SCHED_RR` priorities Linux accepts.
pub const PRIORITIES: std::ops::RangeInclusive<u8> = 1..=99;

/// Puts the calling thread under `SCHED_RR` at `priority` (1-99): threads it starts later
/// inherit it. `flag` names the setting in the error (`--realtime`, the config key `realtime`).
///
/// Refused without `CAP_SYS_NICE` unless `priority` is within the process's `RLIMIT_RTPRIO`
/// (systemd: `LimitRTPRIO=`): the error says so rather than running at the ordinary policy.
pub fn run_realtime(priority: u8, flag: &str) -> Result<()> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    if !PRIORITIES.contains(&priority) {
        return Err(Error::Config(format!(
            "`{flag}` = {priority} must be a SCHED_RR priority from 1 to 99"
        )));
    }
    let value = ThreadPriorityValue::try_from(priority)
        .map_err(|e| Error::Config(format!("`{flag}` = {priority}: {e}")))?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin),
    )
    .map_err(|e| {
        let why = match e {
            thread_priority::Error::OS(code) => std::io::Error::from_raw_os_error(code).to_string(),
            other => other.to_string(),
        };
        Error::Config(format!(
            "`{flag}` = {priority}: SCHED_RR refused: {why} (it needs CAP_SYS_NICE, or \
             RLIMIT_RTPRIO of at least {priority}: systemd `LimitRTPRIO={priority}`)"
        ))
    })
}

/// The scheduling policy of every thread of process `pid` (`/proc/<pid>/task/*/stat`, field 41:
/// 0 ordinary, 2 `SCHED_RR`), by thread id: for tests and the startup log.
pub fn thread_policies(pid: u32) -> std::io::Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name (field 2) is in parentheses and may hold spaces: count from the last
        // `)`, after which field 3 comes first.
        let policy = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(41 - 3))
            .and_then(|f| f.parse::<u32>().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no policy field in /proc/{pid}/task/{tid}/stat"),
                )
            })?;
        out.push((tid, policy));
    }
    Ok(out)
}

/// `SCHED_RR` as `/proc/<pid>/task/<tid>/stat` gives it.
pub const SCHED_RR: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_priority_outside_one_to_ninety_nine_is_refused_naming_the_setting() {
        for p in [0u8, 100, 255] {
            let e = run_realtime(p, "realtime").unwrap_err().to_string();
            assert!(e.contains("`realtime` = "), "{e}");
            assert!(e.contains("1 to 99"), "{e}");
        }
    }

    /// This thread's id, from `/proc/thread-self` (a link to `<pid>/task/<tid>`).
    fn tid() -> u32 {
        let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        let tid = link.file_name().expect("a task id").to_string_lossy();
        tid.parse().expect("a numeric task id")
    }

    #[test]
    fn a_thread_put_under_sched_rr_starts_threads_that_inherit_it() {
        // In a thread of its own, so the test harness's threads keep their policy.
        let outcome = std::thread::spawn(|| {
            run_realtime(5, "--realtime")?;
            let inner = std::thread::spawn(|| {
                let policies = thread_policies(std::process::id()).expect("read /proc");
                (tid(), policies)
            });
            let (inner, policies) = inner.join().expect("the inner thread ends");
            Ok::<_, Error>((tid(), inner, policies))
        })
        .join()
        .expect("the test thread ends");
        match outcome {
            Ok((outer, inner, policies)) => {
                let of = |t| policies.iter().find(|(id, _)| *id == t).map(|(_, p)| *p);
                assert_eq!(of(outer), Some(SCHED_RR), "the thread that asked");
                assert_eq!(of(inner), Some(SCHED_RR), "a thread it started later");
                // The harness's main thread was not touched.
                assert!(policies.iter().any(|(_, p)| *p == 0), "{policies:?}");
            }
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: this process may not use SCHED_RR here ({e})");
            }
            Err(e) => panic!("CI runs as root, where SCHED_RR is allowed: {e}"),
        }
    }
}
