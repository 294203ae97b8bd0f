//! What every connection and every management command shares: the one open array,
//! behind one lock, and the registry of connections with the export each has open.
//!
//! Lock order: the array, then the registry. A connection opens an export (and is
//! registered with it) while holding the array lock, and a management command holds
//! the array lock from the moment it asks who uses a LUN until its change is done,
//! so no client can open a LUN between the question and the change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lunsnap::{Array, FileDevice};

/// The served array.
pub type ServedArray = Array<FileDevice>;

/// A way to end a connection from outside it (shuts its socket down).
pub type Closer = Box<dyn Fn() + Send + Sync>;

/// One registered connection.
struct Entry {
    /// How it is described in messages: "connection 3 from unix:/run/db.sock as host …".
    label: String,
    /// The LUN it has open (none during the handshake).
    lun: Option<u32>,
    /// Set when a management command ends it: its requests are refused from then on.
    kicked: Arc<AtomicBool>,
    close: Closer,
}

/// The state shared by the listeners, the connections and the control socket.
pub struct Shared {
    array: Mutex<ServedArray>,
    conns: Mutex<BTreeMap<u64, Entry>>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    /// Clients accepted whose thread has not ended.
    admitted: AtomicUsize,
    /// Control-socket commands running.
    control_admitted: AtomicUsize,
    /// Wakes the background reclaimer ([`crate::reclaim`]): a count of the wakes so
    /// far, and the condition it waits on.
    reclaim_wakes: Mutex<u64>,
    reclaim_cv: Condvar,
}

/// A client counted against a limit until dropped.
pub struct Admission {
    shared: Arc<Shared>,
    control: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared
            .counter(self.control)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's registration: unregisters it when dropped.
pub struct Registration {
    shared: Arc<Shared>,
    id: u64,
    kicked: Arc<AtomicBool>,
}

impl Registration {
    /// The connection's number (for log lines).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once a management command (or the shutdown) ended this connection.
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Records that the connection now has `lun` open. Call it with the array locked
    /// (the lock that authorized the open), so that management commands see it.
    pub fn opened(&self, _locked: &MutexGuard<'_, ServedArray>, lun: u32, label: String) {
        if let Some(e) = self.shared.registry().get_mut(&self.id) {
            e.lun = Some(lun);
            e.label = label;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.registry().remove(&self.id);
    }
}

impl Shared {
    /// Shares `array`.
    pub fn new(array: ServedArray) -> Arc<Shared> {
        Arc::new(Shared {
            array: Mutex::new(array),
            conns: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            admitted: AtomicUsize::new(0),
            control_admitted: AtomicUsize::new(0),
            reclaim_wakes: Mutex::new(0),
            reclaim_cv: Condvar::new(),
        })
    }

    /// Locks the array. (A thread that panicked while holding it cannot have left
    /// it half changed in a way the array does not guard against itself: every
    /// array operation is all or nothing, or poisons the handle.)
    pub fn lock(&self) -> MutexGuard<'_, ServedArray> {
        self.array.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registry(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, described by `label`, that `close` can end.
    pub fn register(self: &Arc<Self>, label: String, close: Closer) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kicked = Arc::new(AtomicBool::new(false));
        self.registry().insert(
            id,
            Entry {
                label,
                lun: None,
                kicked: kicked.clone(),
                close,
            },
        );
        Registration {
            shared: self.clone(),
            id,
            kicked,
        }
    }

    /// The connections that have LUN `lun` open, described for people. Call it with
    /// the array locked and keep it locked until the change that depends on the answer
    /// is done.
    pub fn users(&self, _locked: &MutexGuard<'_, ServedArray>, lun: u32) -> Vec<String> {
        self.registry()
            .values()
            .filter(|e| e.lun == Some(lun))
            .map(|e| e.label.clone())
            .collect()
    }

    /// Ends every connection that has LUN `lun` open (they get no further reply; what
    /// was acknowledged stays). Call it under the same array lock as the change (before
    /// or after it), so that none of their requests runs after the change. Returns how
    /// many were ended.
    pub fn disconnect(&self, _locked: &MutexGuard<'_, ServedArray>, lun: u32) -> usize {
        let reg = self.registry();
        let mut n = 0;
        for e in reg.values().filter(|e| e.lun == Some(lun)) {
            e.kicked.store(true, Ordering::Release);
            (e.close)();
            n += 1;
        }
        n
    }

    fn counter(&self, control: bool) -> &AtomicUsize {
        if control {
            &self.control_admitted
        } else {
            &self.admitted
        }
    }

    fn admit_to(self: &Arc<Self>, control: bool, max: usize) -> Option<Admission> {
        let c = self.counter(control);
        let mut n = c.load(Ordering::Acquire);
        loop {
            if n >= max {
                return None;
            }
            match c.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Some(Admission {
                        shared: self.clone(),
                        control,
                    })
                }
                Err(now) => n = now,
            }
        }
    }

    /// Counts a new NBD client unless `max` are already being served.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Admission> {
        self.admit_to(false, max)
    }

    /// Counts a new control-socket command unless `max` are already running.
    pub fn admit_control(self: &Arc<Self>, max: usize) -> Option<Admission> {
        self.admit_to(true, max)
    }

    /// Clients being served (accepted, thread not ended).
    pub fn clients(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Control-socket commands running.
    pub fn commands(&self) -> usize {
        self.control_admitted.load(Ordering::Acquire)
    }

    /// Starts the shutdown: ends every connection, and stops the background
    /// reclaimer.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for e in self.registry().values() {
            e.kicked.store(true, Ordering::Release);
            (e.close)();
        }
        self.wake_reclaimer();
    }

    /// Tells the background reclaimer that mappings may have been dropped (a
    /// management command ran): it looks at once instead of at its next poll.
    pub fn wake_reclaimer(&self) {
        let mut n = self.reclaim_wakes.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.wrapping_add(1);
        self.reclaim_cv.notify_all();
    }

    /// The wakes of the reclaimer so far (what [`Shared::wait_for_wake`] compares).
    pub fn reclaim_wakes(&self) -> u64 {
        *self.reclaim_wakes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until [`Shared::wake_reclaimer`] was called since the reclaimer saw
    /// `seen` wakes, or the shutdown began, or `timeout` (if any) passed. Returns the
    /// wakes so far.
    pub fn wait_for_wake(&self, seen: u64, timeout: Option<Duration>) -> u64 {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut n = self.reclaim_wakes.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *n != seen || self.is_shutting_down() {
                return *n;
            }
            // Without a timeout it waits for a wake or the shutdown, looking at the
            // shutdown flag again every second all the same.
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => l,
                    _ => return *n,
                },
                None => Duration::from_secs(1),
            };
            n = self
                .reclaim_cv
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True once the shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}
