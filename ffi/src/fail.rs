//! Failures and their messages: every failed call has a result code and a full
//! message (which argument, how many bytes needed and free, which LUN, what the
//! device said), kept for `lunsnap_last_error_message` in two places:
//! - on the handle the call was made on (its last failed call, from any thread);
//! - for the calling thread (its last failed call, with or without a handle). With
//!   `std` this is a thread-local; without `std` there are no thread-locals, and it
//!   is one slot for the whole library (the last failed call of any thread).

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};

use lunsnap::Error;

use crate::result::{self, lunsnap_result};

/// A failed call: its result code and what exactly went wrong.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: lunsnap_result,
    pub(crate) text: Cow<'static, str>,
}

impl Fail {
    /// A failure with its own text.
    pub(crate) fn new(code: lunsnap_result, text: impl Into<Cow<'static, str>>) -> Fail {
        Fail {
            code,
            text: text.into(),
        }
    }

    /// `LUNSNAP_RESULT_NULL_POINTER` naming the argument.
    pub(crate) fn null(arg: &'static str) -> Fail {
        Fail::new(lunsnap_result::NullPointer, format!("`{arg}` is NULL"))
    }

    /// `LUNSNAP_RESULT_INVALID_ARGUMENT` with this text.
    pub(crate) fn arg(text: impl Into<Cow<'static, str>>) -> Fail {
        Fail::new(lunsnap_result::InvalidArgument, text)
    }

    /// Appends `more` to the text ("text (more)").
    pub(crate) fn with_detail(mut self, more: &str) -> Fail {
        self.text = format!("{} ({more})", self.text).into();
        self
    }

    /// Whether the device itself failed (the codes a device detail explains).
    pub(crate) fn is_device(&self) -> bool {
        matches!(
            self.code,
            lunsnap_result::DeviceIo
                | lunsnap_result::DeviceOutOfRange
                | lunsnap_result::DeviceNotConnected
                | lunsnap_result::DeviceOther
        )
    }
}

impl From<lunsnap_result> for Fail {
    /// The code with its static message.
    fn from(code: lunsnap_result) -> Fail {
        let m = result::message(code as u32);
        let m = core::str::from_utf8(&m[..m.len() - 1]).unwrap_or("lunsnap error");
        Fail::new(code, m)
    }
}

impl From<Error> for Fail {
    /// The core's error: its code and its full message.
    fn from(e: Error) -> Fail {
        Fail::new(lunsnap_result::from(&e), e.to_string())
    }
}

/// A message as kept: text only, no NUL inside.
pub(crate) type Message = Box<str>;

/// The message of `fail` in the call `func`: "func: text", NULs removed.
pub(crate) fn message(func: &str, fail: &Fail) -> Message {
    let mut m = String::with_capacity(func.len() + 2 + fail.text.len());
    m.push_str(func);
    m.push_str(": ");
    m.extend(fail.text.chars().filter(|&c| c != '\0'));
    m.into_boxed_str()
}

/// The message of a caught panic (its payload when it is text).
#[cfg(feature = "std")]
pub(crate) fn panic_fail(payload: &(dyn core::any::Any + Send)) -> Fail {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned());
    let base = Fail::from(lunsnap_result::Panic);
    match what {
        Some(w) => base.with_detail(&format!("panicked: {w}")),
        None => base,
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    /// The calling thread's last failure.
    static THREAD_LAST: core::cell::RefCell<Option<Message>> =
        const { core::cell::RefCell::new(None) };
}

/// Without thread-locals: the library's last failure (any thread).
#[cfg(not(feature = "std"))]
static GLOBAL_LAST: crate::lock::Lock<Option<Message>> = crate::lock::Lock::new(None);

/// Keeps `m` as the calling thread's last failure.
pub(crate) fn set_thread_message(m: Message) {
    #[cfg(feature = "std")]
    {
        // A thread being torn down has no slot any more: the message is dropped.
        let _ = THREAD_LAST.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = Some(m);
            }
        });
    }
    #[cfg(not(feature = "std"))]
    {
        *GLOBAL_LAST.lock() = Some(m);
    }
}

/// A copy of the calling thread's last failure ("" when none).
pub(crate) fn thread_message() -> Message {
    #[cfg(feature = "std")]
    {
        THREAD_LAST
            .try_with(|s| s.try_borrow().ok().and_then(|s| s.clone()))
            .ok()
            .flatten()
            .unwrap_or_default()
    }
    #[cfg(not(feature = "std"))]
    {
        GLOBAL_LAST.lock().clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_keep_their_full_message() {
        let f = Fail::from(Error::NoSpace {
            needed: 1 << 20,
            available: 4096,
        });
        assert_eq!(f.code, lunsnap_result::NoSpace);
        let m = message("lunsnap_create_lun", &f);
        assert_eq!(
            &*m,
            "lunsnap_create_lun: not enough space to reserve: 1048576 bytes needed, 4096 unreserved"
        );
    }

    #[test]
    fn a_lost_commit_keeps_both_generations_in_its_message() {
        let f = Fail::from(Error::CommitLost {
            lost: 12,
            kept: 11,
            certain: true,
        });
        assert_eq!(f.code, lunsnap_result::CommitLost);
        let m = message("lunsnap_open_callbacks", &f);
        assert!(
            m.starts_with(
                "lunsnap_open_callbacks: both copies of the superblock of generation 12 are \
                 damaged: that commit is lost and opening would roll the array back to \
                 generation 11"
            ),
            "{m}"
        );
    }

    #[test]
    fn codes_alone_get_their_static_message() {
        let f = Fail::from(lunsnap_result::InvalidHandle);
        assert_eq!(
            f.text,
            "not a live array handle (never opened, or already freed)"
        );
        assert!(!f.is_device());
        assert!(Fail::from(lunsnap_result::DeviceIo).is_device());
    }

    #[test]
    fn nuls_never_reach_a_message() {
        let f = Fail::arg("a\0b");
        assert_eq!(&*message("f", &f), "f: ab");
    }

    #[test]
    fn each_thread_has_its_own_message() {
        set_thread_message("main".into());
        std::thread::spawn(|| {
            assert_eq!(&*thread_message(), "");
            set_thread_message("other".into());
            assert_eq!(&*thread_message(), "other");
        })
        .join()
        .unwrap();
        assert_eq!(&*thread_message(), "main");
    }
}
