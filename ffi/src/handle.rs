//! Array handles: the pointer a C host holds is only a key into a registry of live
//! handles, never dereferenced, so a freed or forged handle is detected
//! (`LUNSNAP_RESULT_INVALID_HANDLE`) instead of being undefined behaviour. Each
//! handle serialises its users with a lock (sleeping with `std`, spinning without:
//! see [`crate::lock`]), so one handle may be shared by several threads. Each handle
//! also keeps the message of its last failed call.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;

use lunsnap::{Array, OpenOptions, Severity};

use crate::device::{self, AnyDevice, Detail};
use crate::fail::{Fail, Message};
use crate::lock::Lock;
use crate::result::lunsnap_result;

/// Opaque array handle.
#[allow(non_camel_case_types)]
pub struct lunsnap_array {
    _private: [u8; 0],
}

/// An open array and what the C side may still ask about its last check and scrub.
pub(crate) struct Open {
    pub(crate) array: Array<AnyDevice>,
    /// The violations of the last `lunsnap_check`: message (NUL-terminated) and
    /// severity.
    pub(crate) report: Vec<(Vec<u8>, Severity)>,
    /// The lost pages the last `lunsnap_scrub` listed: address and message
    /// (NUL-terminated).
    pub(crate) scrub_lost: Vec<(u64, Vec<u8>)>,
    /// The options it was opened with (for `lunsnap_reopen`: the cache budget,
    /// whether a rollback is allowed).
    pub(crate) opts: OpenOptions,
}

pub(crate) enum State {
    Open(Box<Open>),
    /// Refuses every call with this code: `Panic` after a caught panic (the state
    /// is unknown), `Unusable` after a failed reopen (the device is gone).
    Broken(lunsnap_result),
}

impl State {
    /// A freshly opened array, with no check or scrub report yet.
    pub(crate) fn open(array: Array<AnyDevice>, opts: OpenOptions) -> State {
        State::Open(Box::new(Open {
            array,
            report: Vec::new(),
            scrub_lost: Vec::new(),
            opts,
        }))
    }
}

pub(crate) struct Handle {
    pub(crate) state: Lock<State>,
    /// The message of the last failed call on this handle (its own lock, so that
    /// reading it never waits for another thread's device I/O).
    pub(crate) last_error: Lock<Option<Message>>,
    /// Where the device leaves the detail of its last failure.
    pub(crate) detail: Detail,
}

/// Live handles by key, and the next key to hand out.
struct Registry {
    live: BTreeMap<usize, Arc<Handle>>,
    next: usize,
}

static REGISTRY: Lock<Registry> = Lock::new(Registry {
    live: BTreeMap::new(),
    next: KEY_STEP,
});

/// Keys advance by this much (never 0; they look like aligned pointers to a debugger).
const KEY_STEP: usize = 16;

/// Registers a new handle for `array`, opened with `opts` (kept for
/// `lunsnap_reopen`), and returns its key. Keys are never reused (until the counter
/// wraps, and then never one still live), so a freed handle stays invalid however
/// many handles are made after it.
pub(crate) fn register(array: Array<AnyDevice>, opts: OpenOptions) -> *mut lunsnap_array {
    let h = Arc::new(Handle {
        detail: array.device().detail(),
        state: Lock::new(State::open(array, opts)),
        last_error: Lock::new(None),
    });
    let mut reg = REGISTRY.lock();
    let mut key = reg.next;
    while key == 0 || reg.live.contains_key(&key) {
        key = key.wrapping_add(KEY_STEP);
    }
    reg.next = key.wrapping_add(KEY_STEP);
    reg.live.insert(key, h);
    key as *mut lunsnap_array
}

/// The live handle with key `a`.
pub(crate) fn lookup(a: *const lunsnap_array) -> Result<Arc<Handle>, Fail> {
    if a.is_null() {
        return Err(Fail::null("array"));
    }
    let h = REGISTRY.lock().live.get(&(a as usize)).cloned();
    h.ok_or_else(|| not_live(a))
}

/// `LUNSNAP_RESULT_INVALID_HANDLE` for `a`.
pub(crate) fn not_live(a: *const lunsnap_array) -> Fail {
    Fail::new(
        lunsnap_result::InvalidHandle,
        format!("`array` ({a:p}) is not a live array handle: never returned by this library, or already freed"),
    )
}

/// Keeps `m` as the last failure of the live handle `a` (nothing if it is not one).
pub(crate) fn set_message(a: *const lunsnap_array, m: Message) {
    if let Ok(h) = lookup(a) {
        *h.last_error.lock() = Some(m);
    }
}

/// Removes the handle with key `a`; it is dropped once no call still uses it.
pub(crate) fn unregister(a: *const lunsnap_array) -> Option<Arc<Handle>> {
    REGISTRY.lock().live.remove(&(a as usize))
}

/// Runs `f` on the open array behind `a`, holding its lock. With `std`, a panic
/// in `f` is caught, marks the handle broken and becomes `LUNSNAP_RESULT_PANIC`.
/// A device failure's detail is added to the error's text.
pub(crate) fn with_open<T>(
    a: *const lunsnap_array,
    f: impl FnOnce(&mut Open) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let h = lookup(a)?;
    let mut st = h.state.lock();
    let open = match &mut *st {
        State::Open(o) => o,
        State::Broken(why) => return Err(Fail::from(*why)),
    };
    device::clear(&h.detail);
    let r = crate::guard::catch(|| f(open));
    match r {
        Ok(r) => r.map_err(|e| device::explain(e, &h.detail)),
        Err(panic) => {
            *st = State::Broken(lunsnap_result::Panic);
            Err(panic)
        }
    }
}

/// [`with_open`] for functions that only need the array.
pub(crate) fn with_array<T>(
    a: *const lunsnap_array,
    f: impl FnOnce(&mut Array<AnyDevice>) -> Result<T, Fail>,
) -> Result<T, Fail> {
    with_open(a, |o| f(&mut o.array))
}
