//! Real-time scheduling for a process's threads: `serve --realtime <PRIORITY>` (and the load
//! generator's `--realtime`); and thread placement on CPUs (replay's two threads, the stall
//! probe of `portcullis-speed`).
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
//! policy and priority on Linux) — none is left behind at the ordinary policy; background work
//! steps one priority below the request-serving threads only while it runs ([`in_background`]).
//! The kernel's
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

/// Runs `f` one step below the request-serving threads when the calling thread is real-time
/// (`SCHED_RR` or `SCHED_FIFO` at priority P: the same policy at P - 1, or the ordinary policy
/// when P is 1), and puts the thread back afterwards, panic or not.
///
/// For background work on the blocking pool of a real-time service (the write-behind flush,
/// housekeeping): the kernel does not preempt a real-time thread for another of the same
/// priority, so a flush that computes for 15-20 ms (measured at 290 K attempts/s) held the CPU of
/// a runtime worker for that long. One priority lower, a waking worker takes the CPU back at
/// once, while the flush still runs ahead of the machine's ordinary processes: dropped to the
/// ordinary policy instead, it could be kept off the CPU while holding a map's shard lock that
/// the workers wait for. Lowering one's own priority needs no privilege; raising it back does
/// what the start already proved allowed.
pub fn in_background<T>(f: impl FnOnce() -> T) -> T {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy_param,
        NormalThreadSchedulePolicy, RealtimeThreadSchedulePolicy as Rt, ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityOsValue};

    /// Puts the thread back at its real-time policy and priority when dropped.
    struct Restore(Rt, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            if !set_realtime(self.0, self.1) {
                tracing::warn!(
                    priority = self.1,
                    "A blocking-pool thread could not return to its real-time priority."
                );
            }
        }
    }

    let _restore = match thread_schedule_policy_param(thread_native_id()) {
        Ok((ThreadSchedulePolicy::Realtime(policy @ (Rt::RoundRobin | Rt::Fifo)), params)) => {
            let priority = params.sched_priority;
            let lowered = if priority > 1 {
                set_realtime(policy, priority - 1)
            } else {
                set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Os(ThreadPriorityOsValue::default()),
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                )
                .is_ok()
            };
            lowered.then_some(Restore(policy, priority))
        }
        _ => None,
    };
    f()
}

/// Puts the calling thread under real-time `policy` at `priority`; whether that worked.
fn set_realtime(
    policy: thread_priority::unix::RealtimeThreadSchedulePolicy,
    priority: i32,
) -> bool {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    let Some(value) = u8::try_from(priority)
        .ok()
        .and_then(|p| ThreadPriorityValue::try_from(p).ok())
    else {
        return false;
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(policy),
    )
    .is_ok()
}

/// The CPUs the calling thread may run on, in order.
pub fn cpus_of_this_thread() -> nix::Result<Vec<usize>> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// One thread's scheduling, as `/proc/<pid>/task/<tid>/stat` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSched {
    /// The thread id.
    pub tid: u32,
    /// The policy (field 41): 0 ordinary, [`SCHED_RR`] round-robin real-time.
    pub policy: u32,
    /// The real-time priority (field 40): 0 for the ordinary policy.
    pub priority: u32,
}

/// The scheduling of every thread of process `pid` (`/proc/<pid>/task/*/stat`): for tests and
/// checks.
pub fn thread_policies(pid: u32) -> std::io::Result<Vec<ThreadSched>> {
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
        let fields: Vec<u32> = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(40 - 3)
                    .take(2)
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [priority, policy] = fields[..] else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no priority and policy fields in /proc/{pid}/task/{tid}/stat"),
            ));
        };
        out.push(ThreadSched {
            tid,
            policy,
            priority,
        });
    }
    Ok(out)
}

/// For tests that need `SCHED_RR`: whether this process may use it (tried on a throwaway
/// thread). Where it may not, a test skips with a message, except in CI (`CI` set), which runs as
/// root where it may: there this panics rather than let the test pass unchecked.
pub fn realtime_allowed_or_skip() -> bool {
    let allowed = std::thread::spawn(|| run_realtime(1, "realtime"))
        .join()
        .is_ok_and(|r| r.is_ok());
    if !allowed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root, where SCHED_RR is allowed"
        );
        eprintln!("skipped: this process may not use SCHED_RR here (no CAP_SYS_NICE)");
    }
    allowed
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
                let of = |t| policies.iter().find(|x| x.tid == t).map(|x| x.policy);
                assert_eq!(of(outer), Some(SCHED_RR), "the thread that asked");
                assert_eq!(of(inner), Some(SCHED_RR), "a thread it started later");
                // The harness's main thread was not touched.
                assert!(policies.iter().any(|x| x.policy == 0), "{policies:?}");
            }
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: this process may not use SCHED_RR here ({e})");
            }
            Err(e) => panic!("CI runs as root, where SCHED_RR is allowed: {e}"),
        }
    }

    /// This thread's (policy, real-time priority) as `/proc` gives them.
    fn mine() -> (u32, u32) {
        let me = tid();
        thread_policies(std::process::id())
            .expect("read /proc")
            .into_iter()
            .find(|x| x.tid == me)
            .map(|x| (x.policy, x.priority))
            .expect("this thread is listed")
    }

    #[test]
    fn background_work_runs_one_priority_below_and_the_thread_gets_its_own_back() {
        let outcome = std::thread::spawn(|| {
            run_realtime(7, "--realtime")?;
            let during = in_background(mine);
            // A panic inside does not leave the thread lowered.
            let caught = std::panic::catch_unwind(|| in_background(|| panic!("in a flush")));
            let after = mine();
            // At priority 1 there is no real-time step below: the ordinary policy.
            run_realtime(1, "--realtime")?;
            let at_one = in_background(mine);
            Ok::<_, Error>((during, caught.is_err(), after, at_one, mine()))
        })
        .join()
        .expect("the test thread ends");
        match outcome {
            Ok((during, panicked, after, at_one, after_one)) => {
                assert_eq!(during, (SCHED_RR, 6), "one below while the work runs");
                assert!(panicked);
                assert_eq!(after, (SCHED_RR, 7), "its own priority afterwards");
                assert_eq!(at_one, (0, 0), "below priority 1: the ordinary policy");
                assert_eq!(after_one, (SCHED_RR, 1));
            }
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: this process may not use SCHED_RR here ({e})");
            }
            Err(e) => panic!("CI runs as root, where SCHED_RR is allowed: {e}"),
        }
    }

    #[test]
    fn background_work_on_an_ordinary_thread_leaves_its_policy_alone() {
        let (during, after) = std::thread::spawn(|| (in_background(mine), mine()))
            .join()
            .expect("the test thread ends");
        assert_eq!((during, after), ((0, 0), (0, 0)));
    }
}
