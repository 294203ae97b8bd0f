//! [`ErrorDevice`]: injects a device error at the Nth read, write, flush or discard.

use core::fmt;

use crate::device::{BlockDevice, DeviceError, DeviceErrorKind};

/// The kind of device call a [`Fault`] counts and fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`BlockDevice::read`].
    Read,
    /// [`BlockDevice::write`].
    Write,
    /// [`BlockDevice::flush`].
    Flush,
    /// [`BlockDevice::discard`] (a hint: the array must ignore its failure).
    Discard,
}

/// When an [`ErrorDevice`] fails: the call of kind `op` that has `nth` calls of that
/// kind before it (counted from when the fault was armed; `nth == 0` is the very next
/// one) fails, and if `sticky`, so does every later call of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Which calls are counted and failed.
    pub op: FaultOp,
    /// How many calls of that kind succeed first.
    pub nth: u64,
    /// Fail every later call of that kind too (a dead device) rather than only one
    /// (a transient error).
    pub sticky: bool,
    /// The error the failing calls return.
    pub kind: DeviceErrorKind,
}

impl Fault {
    /// Fails only the call of kind `op` after `nth` successful ones, with
    /// [`DeviceErrorKind::Io`].
    pub fn once(op: FaultOp, nth: u64) -> Fault {
        Fault {
            op,
            nth,
            sticky: false,
            kind: DeviceErrorKind::Io,
        }
    }

    /// Fails every call of kind `op` after `nth` successful ones, with
    /// [`DeviceErrorKind::Io`].
    pub fn sticky(op: FaultOp, nth: u64) -> Fault {
        Fault {
            sticky: true,
            ..Fault::once(op, nth)
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FaultOp::Read => "read",
            FaultOp::Write => "write",
            FaultOp::Flush => "flush",
            FaultOp::Discard => "discard",
        };
        let how = if self.sticky {
            "and every later one"
        } else {
            "once"
        };
        write!(f, "{op} #{} fails {how} ({:?})", self.nth, self.kind)
    }
}

/// A device that passes every call to an inner [`BlockDevice`] except the ones a
/// [`Fault`] selects, which fail without reaching it. A failing read fills its buffer
/// with garbage first, so code that uses the buffer despite the error is caught.
///
/// Counting starts when the fault is armed ([`ErrorDevice::with_fault`],
/// [`ErrorDevice::set_fault`]); [`reads`](Self::reads), [`writes`](Self::writes),
/// [`flushes`](Self::flushes) and [`discards`](Self::discards) count every call since
/// the device was made, so a test can
/// run a workload once without a fault to learn how many calls of each kind it makes,
/// then fail each of them in turn:
///
/// ```
/// use lunsnap::{BlockDevice, MemDevice};
/// use lunsnap::testing::{ErrorDevice, Fault, FaultOp};
///
/// let mut dev = ErrorDevice::with_fault(
///     MemDevice::new(512, 8).unwrap(),
///     Fault::once(FaultOp::Write, 1),
/// );
/// dev.write(0, &[1u8; 512]).unwrap();
/// assert!(dev.write(1, &[2u8; 512]).is_err()); // the second write fails
/// dev.write(1, &[2u8; 512]).unwrap(); // once: the device works again
/// assert_eq!((dev.writes(), dev.failures()), (3, 1));
/// ```
#[derive(Clone, Debug)]
pub struct ErrorDevice<D: BlockDevice> {
    inner: D,
    fault: Option<Fault>,
    /// Calls of the fault's kind since it was armed.
    seen: u64,
    reads: u64,
    writes: u64,
    flushes: u64,
    discards: u64,
    failures: u64,
}

impl<D: BlockDevice> ErrorDevice<D> {
    /// Wraps `inner` with no fault armed.
    pub fn new(inner: D) -> Self {
        ErrorDevice {
            inner,
            fault: None,
            seen: 0,
            reads: 0,
            writes: 0,
            flushes: 0,
            discards: 0,
            failures: 0,
        }
    }

    /// Wraps `inner` with `fault` armed.
    pub fn with_fault(inner: D, fault: Fault) -> Self {
        let mut d = ErrorDevice::new(inner);
        d.set_fault(Some(fault));
        d
    }

    /// Arms `fault` (counting from now), or disarms with `None`.
    pub fn set_fault(&mut self, fault: Option<Fault>) {
        self.fault = fault;
        self.seen = 0;
    }

    /// The armed fault.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Whether the armed fault has made a call fail.
    pub fn triggered(&self) -> bool {
        self.fault.is_some_and(|f| self.seen > f.nth)
    }

    /// Read calls so far, failed ones included.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Write calls so far, failed ones included.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Flush calls so far, failed ones included.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Discard calls so far, failed ones included.
    pub fn discards(&self) -> u64 {
        self.discards
    }

    /// Calls that failed because of a fault.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The inner device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The inner device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Returns the inner device.
    pub fn into_inner(self) -> D {
        self.inner
    }

    /// Counts a call of kind `op`; the fault's error if it must fail.
    fn hit(&mut self, op: FaultOp) -> Result<(), DeviceErrorKind> {
        let Some(f) = self.fault.filter(|f| f.op == op) else {
            return Ok(());
        };
        let i = self.seen;
        self.seen = self.seen.saturating_add(1);
        if i == f.nth || (f.sticky && i > f.nth) {
            self.failures += 1;
            return Err(f.kind);
        }
        Ok(())
    }
}

impl<D: BlockDevice> BlockDevice for ErrorDevice<D> {
    type Error = DeviceErrorKind;

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.reads += 1;
        if let Err(e) = self.hit(FaultOp::Read) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31) ^ 0xA5;
            }
            return Err(e);
        }
        self.inner.read(lba, buf).map_err(|e| e.kind())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        self.writes += 1;
        self.hit(FaultOp::Write)?;
        self.inner.write(lba, buf).map_err(|e| e.kind())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.flushes += 1;
        self.hit(FaultOp::Flush)?;
        self.inner.flush().map_err(|e| e.kind())
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        self.discards += 1;
        self.hit(FaultOp::Discard)?;
        self.inner.discard(lba, count).map_err(|e| e.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use alloc::format;

    fn dev(f: Fault) -> ErrorDevice<MemDevice> {
        ErrorDevice::with_fault(MemDevice::new(512, 16).unwrap(), f)
    }

    #[test]
    fn once_fails_exactly_the_nth_call_of_its_kind() {
        let mut d = dev(Fault::once(FaultOp::Read, 2));
        let mut b = [0u8; 512];
        d.write(0, &[7u8; 512]).unwrap();
        d.flush().unwrap();
        d.read(0, &mut b).unwrap();
        d.read(0, &mut b).unwrap();
        assert!(!d.triggered());
        assert_eq!(d.read(0, &mut b), Err(DeviceErrorKind::Io));
        assert_ne!(b, [7u8; 512], "a failed read leaves garbage");
        assert!(d.triggered());
        d.read(0, &mut b).unwrap();
        assert_eq!(b, [7u8; 512]);
        assert_eq!(
            (d.reads(), d.writes(), d.flushes(), d.failures()),
            (4, 1, 1, 1)
        );
    }

    #[test]
    fn sticky_fails_every_later_call_of_its_kind_only() {
        let mut d = dev(Fault::sticky(FaultOp::Write, 1));
        d.write(0, &[1u8; 512]).unwrap();
        for _ in 0..3 {
            assert_eq!(d.write(1, &[2u8; 512]), Err(DeviceErrorKind::Io));
        }
        d.flush().unwrap();
        let mut b = [0u8; 512];
        d.read(1, &mut b).unwrap();
        assert_eq!(b, [0u8; 512], "the failed writes did not reach the device");
        assert_eq!(d.failures(), 3);
        d.set_fault(None);
        d.write(1, &[2u8; 512]).unwrap();
        assert!(!d.triggered());
        let mut inner = d.into_inner();
        inner.read(1, &mut b).unwrap();
        assert_eq!(b, [2u8; 512]);
    }

    #[test]
    fn flush_fault_and_inner_errors() {
        let f = Fault {
            kind: DeviceErrorKind::NotConnected,
            ..Fault::once(FaultOp::Flush, 0)
        };
        let mut d = dev(f);
        assert_eq!(d.flush(), Err(DeviceErrorKind::NotConnected));
        d.flush().unwrap();
        assert_eq!(d.write(16, &[0u8; 512]), Err(DeviceErrorKind::OutOfRange));
        assert_eq!(d.discard(16, 1), Err(DeviceErrorKind::OutOfRange));
        assert_eq!(d.block_size(), 512);
        assert_eq!(d.block_count(), 16);
        assert_eq!(d.fault(), Some(f));
        assert!(format!("{f}").contains("flush #0 fails once"));
        assert!(format!("{}", Fault::sticky(FaultOp::Read, 3)).contains("every later"));
        d.inner_mut().write(0, &[1u8; 512]).unwrap();
        assert_eq!(d.inner().resident_blocks(), 1);
    }

    #[test]
    fn a_failed_discard_does_not_reach_the_device() {
        let mut d = dev(Fault::once(FaultOp::Discard, 1));
        d.write(0, &[1u8; 1024]).unwrap();
        d.discard(0, 1).unwrap();
        assert_eq!(d.discard(1, 1), Err(DeviceErrorKind::Io));
        assert_eq!(d.inner().resident_blocks(), 1, "block 1 kept its content");
        d.discard(1, 1).unwrap();
        assert_eq!((d.discards(), d.failures()), (3, 1));
        assert!(format!("{}", Fault::once(FaultOp::Discard, 1)).contains("discard #1"));
    }
}
