//! What the data path asks of the device (docs/DESIGN.md: "I/O close to the raw
//! device"): once the mapping is cached, a read or write of whole device blocks is
//! one device call of exactly those bytes; a sector inside a larger device block
//! costs one block read (and, to write it, one block write).

use lunsnap::{Array, BlockDevice, FormatOptions, MemDevice};

/// A device that counts the calls and bytes the array makes of it.
#[derive(Debug)]
struct Counting {
    inner: MemDevice,
    reads: Calls,
    writes: Calls,
}

impl BlockDevice for Counting {
    type Error = <MemDevice as BlockDevice>::Error;
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.reads.push((lba, buf.len()));
        self.inner.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        self.writes.push((lba, buf.len()));
        self.inner.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

fn array(block_size: u32) -> Array<Counting> {
    let dev = Counting {
        inner: MemDevice::new(block_size, (32 << 20) / u64::from(block_size)).unwrap(),
        reads: Vec::new(),
        writes: Vec::new(),
    };
    let opts = FormatOptions {
        extent_size: 16 * 1024,
        max_luns: 4,
        ..Default::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(0, 1 << 20).unwrap();
    a.write(0, 0, &vec![9; 1 << 20]).unwrap();
    a.flush().unwrap();
    a
}

/// Device calls: (first block, bytes).
type Calls = Vec<(u64, usize)>;

/// The device calls `f` makes on `a`, after a first run that warms the cache.
fn calls(a: &mut Array<Counting>, mut f: impl FnMut(&mut Array<Counting>)) -> (Calls, Calls) {
    f(a);
    let d = a.device_mut();
    d.reads.clear();
    d.writes.clear();
    f(a);
    let d = a.device_mut();
    (std::mem::take(&mut d.reads), std::mem::take(&mut d.writes))
}

#[test]
fn whole_blocks_are_one_device_call() {
    for bs in [512u32, 4096] {
        let mut a = array(bs);
        // 8 KiB inside one extent; then a whole extent.
        for (off, len) in [(16 * 1024 + 4096, 8192usize), (32 * 1024, 16 * 1024)] {
            let mut buf = vec![0u8; len];
            let (r, w) = calls(&mut a, |a| a.read(0, off, &mut buf).unwrap());
            assert_eq!(
                (r.len(), r[0].1, w.len()),
                (1, len, 0),
                "read {len} at {off}, {bs}-byte blocks"
            );
            assert_eq!(buf, vec![9; len]);
            // Rewriting an extent written since the last commit is in place: one call.
            let data = vec![7u8; len];
            let (r, w) = calls(&mut a, |a| a.write(0, off, &data).unwrap());
            assert_eq!(
                (r.len(), w.len(), w[0].1),
                (0, 1, len),
                "write {len} at {off}, {bs}-byte blocks"
            );
        }
    }
}

#[test]
fn a_sector_inside_a_larger_block_is_one_block_read_and_write() {
    let mut a = array(4096);
    let mut b = [0u8; 512];
    let (r, w) = calls(&mut a, |a| a.read(0, 16 * 1024 + 1536, &mut b).unwrap());
    assert_eq!((r.len(), r[0].1, w.len()), (1, 4096, 0));
    assert_eq!(b, [9; 512]);
    // Two sectors straddling two device blocks: two block reads.
    let mut b2 = [0u8; 1024];
    let (r, _) = calls(&mut a, |a| a.read(0, 16 * 1024 + 3584, &mut b2).unwrap());
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].0, r[0].0 + 1);
    assert_eq!(b2, [9; 1024]);
    // A sector write: read the block, write it back.
    let (r, w) = calls(&mut a, |a| a.write(0, 16 * 1024 + 1536, &[5; 512]).unwrap());
    assert_eq!(
        (r.len(), w.len(), r[0], w[0]),
        (1, 1, (r[0].0, 4096), (r[0].0, 4096))
    );
    // 8 KiB from a sector into a block: the two partial blocks are read, the whole
    // one between them is not; three block writes.
    let (r, w) = calls(&mut a, |a| a.write(0, 16 * 1024 + 512, &[6; 8192]).unwrap());
    assert_eq!((r.len(), w.len()), (2, 3));
    assert_eq!(r[1].0, r[0].0 + 2, "the middle block is not read");
    let mut b = [0u8; 4096];
    a.read(0, 24 * 1024, &mut b).unwrap();
    assert_eq!(&b[..512], &[6; 512][..]);
    assert_eq!(&b[512..], &[9; 3584][..]);
    a.write(0, 16 * 1024, &[9; 8192 + 4096]).unwrap();
    a.write(0, 16 * 1024 + 1536, &[5; 512]).unwrap();
    let mut b = [0u8; 4096];
    a.read(0, 16 * 1024, &mut b).unwrap();
    assert_eq!(&b[..1536], &[9; 1536][..]);
    assert_eq!(&b[1536..2048], &[5; 512][..]);
    assert_eq!(&b[2048..], &[9; 2048][..]);
}
