//! Background reclamation: the space of the mappings that management commands drop
//! (`lun delete`, `copy detach`, `copy attach`, `copy restore`) is freed while the
//! server serves.
//!
//! Those commands return at once and leave the dropped mapping in the array's free
//! queue. One thread works the queue off: while anything waits, it takes the array
//! lock for one step of [`RECLAIM_PER_FLUSH`] units of work (well under a
//! millisecond, plus the commit that makes it durable), releases it so that NBD
//! requests and commands run in between (pausing [`PAUSE`] while clients are
//! connected or commands run), and goes on; when nothing waits it sleeps until a
//! command on the control socket wakes it ([`Shared::wake_reclaimer`]), looking
//! again every [`IDLE_POLL`] all the same. It stops at the shutdown, after the step
//! it is in.
//!
//! A device error in a step is logged, like the errors of connections; the array
//! refuses changes from then on (as after any failed commit), the server goes on
//! serving what it can, and the reclaimer tries again only when woken.

use std::sync::Arc;
use std::time::Duration;

use lunsnap::RECLAIM_PER_FLUSH;

use crate::log;
use crate::shared::Shared;

/// How often the idle reclaimer looks at the free queue without being woken.
pub const IDLE_POLL: Duration = Duration::from_millis(50);
/// The pause between two steps while clients are connected or commands run, so
/// that their requests get the array lock in between.
pub const PAUSE: Duration = Duration::from_millis(1);

/// What one look at the queue found.
enum Step {
    /// Nothing waits (or the array refuses changes): sleep.
    Idle,
    /// A step was done, and more waits.
    More,
    /// A step was done, and nothing waits any more.
    Done,
    /// The step failed (already logged).
    Failed,
}

/// One step: under the array lock, at most [`RECLAIM_PER_FLUSH`] units of work.
fn step(shared: &Shared) -> Step {
    let mut a = shared.lock();
    if shared.is_shutting_down() || a.is_poisoned() || !a.reclaim_pending() {
        return Step::Idle;
    }
    match a.reclaim(RECLAIM_PER_FLUSH) {
        Ok(s) if s.remaining == 0 => Step::Done,
        Ok(_) => Step::More,
        Err(e) => {
            log::line(&format!(
                "background reclamation failed: {e}; the space of dropped mappings stays \
                 queued in the image (the server goes on serving)"
            ));
            Step::Failed
        }
    }
}

/// The reclaimer's thread: runs until the shutdown.
pub fn run(shared: Arc<Shared>) {
    let mut seen = shared.reclaim_wakes();
    while !shared.is_shutting_down() {
        match step(&shared) {
            Step::Idle | Step::Done => seen = shared.wait_for_wake(seen, Some(IDLE_POLL)),
            Step::More if shared.clients() > 0 || shared.commands() > 0 => {
                std::thread::sleep(PAUSE)
            }
            Step::More => std::thread::yield_now(),
            // Not again until a command wakes it: a device that fails once tends to
            // fail again, and each failure is logged.
            Step::Failed => seen = shared.wait_for_wake(seen, None),
        }
    }
}

/// Starts the reclaimer's thread (`None`, logged, if no thread can be started: the
/// queue is then worked off by flushes and by writes that need its space).
pub fn spawn(shared: Arc<Shared>) -> Option<std::thread::JoinHandle<()>> {
    match std::thread::Builder::new()
        .name("reclaim".into())
        .spawn(move || run(shared))
    {
        Ok(t) => Some(t),
        Err(e) => {
            log::line(&format!("cannot start the background reclaimer: {e}"));
            None
        }
    }
}
