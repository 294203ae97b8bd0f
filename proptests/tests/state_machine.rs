//! State-machine property test (docs/DESIGN.md §4): random sequences of every operation —
//! create/delete LUN, create copy attached/detached, attach, detach, restore, copy of
//! copy, write, discard, read, flush, reopen, power cut + reopen, consistency groups
//! (`create_copies`, `attach_many`), offline/online, hosts, grants, security and the
//! `*_as` I/O — applied to an `Array` on a `PowerCutDevice` and to
//! `lunsnap::testing::Model` side by side.
//!
//! After every step: the results agree (errors included), every read is compared, the
//! LUN records and the pool accounting (reserved, exclusive, shared, allocated, free,
//! generation) equal the model's, the hosts, grants, security switch and each host's
//! visible LUNs equal the model's, the touched LUNs' contents equal the model's, and
//! `check()` is empty. A power cut (drop-all, keep-all, random or harsh) is followed by
//! a reopen and `Model::recover`: the last commit exactly, committed copies included.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 512).

use std::sync::OnceLock;

use lunsnap::testing::Model;
use lunsnap::testing::{CutOutcome, PowerCutDevice};
use lunsnap::{Access, Array, FormatOptions, MemDevice, PoolInfo, SECTOR};
use lunsnap_proptests::pattern::ZERO_BLOCKS;
use lunsnap_proptests::{env_count, Harness, Op};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, FileFailurePersistence};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

type Dev = PowerCutDevice<MemDevice>;

/// One array geometry.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    block_size: u32,
    bytes: u64,
    extent_size: u32,
    cache_bytes: usize,
    max_luns: u32,
    /// Copies of every metadata page.
    copies: u32,
}

const GEOMETRIES: [Geometry; 3] = [
    // Small cache: dirty metadata is evicted (written) before commits.
    Geometry {
        block_size: 512,
        bytes: 2 << 20,
        extent_size: 4096,
        cache_bytes: 64 << 10,
        max_luns: 6,
        copies: 2,
    },
    // Device blocks larger than a sector: sector I/O read-modify-writes blocks.
    Geometry {
        block_size: 4096,
        bytes: 3 << 20,
        extent_size: 8192,
        cache_bytes: 256 << 10,
        max_luns: 5,
        copies: 2,
    },
    // A small pool that fills up: copy-on-write commits early, discards commit first.
    Geometry {
        block_size: 512,
        bytes: 1 << 20,
        extent_size: 4096,
        cache_bytes: 64 << 10,
        max_luns: 4,
        // The pool of a 1 MiB device has room for one copy of the metadata.
        copies: 1,
    },
];

impl Geometry {
    fn format_options(&self) -> FormatOptions {
        FormatOptions {
            extent_size: self.extent_size,
            max_luns: self.max_luns,
            cache_bytes: self.cache_bytes,
            array_id: *b"lunsnap-proptest",
            metadata_copies: self.copies,
        }
    }

    fn device(&self) -> Dev {
        let blocks = self.bytes / u64::from(self.block_size);
        PowerCutDevice::new(MemDevice::new(self.block_size, blocks).expect("device"))
    }

    /// The pool of a freshly formatted array (computed once).
    fn pool(&self, i: usize) -> PoolInfo {
        static POOLS: [OnceLock<PoolInfo>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        *POOLS[i].get_or_init(|| {
            Array::format(self.device(), &self.format_options())
                .expect("format")
                .pool_info()
        })
    }
}

/// The reference state: the model with management operations applied (data writes
/// are skipped: the transitions only depend on the LUNs and their sizes).
#[derive(Clone, Debug)]
struct RefState {
    geometry: usize,
    m: Model,
}

struct Reference;

/// Offset and length (bytes) of an I/O in a LUN of `size` bytes: mostly inside it,
/// biased towards extent boundaries; sometimes misaligned or out of range.
fn io_range(size: u64, es: u64) -> BoxedStrategy<(u64, u64)> {
    let sectors = size / SECTOR;
    let per_extent = es / SECTOR;
    let max_len = sectors.min(3 * per_extent + 2);
    let extents = size.div_ceil(es);
    Union::new_weighted(vec![
        (
            12,
            (0..sectors, 1..=max_len)
                .prop_map(move |(s, l)| (s * SECTOR, l.min(sectors - s) * SECTOR))
                .boxed(),
        ),
        (
            4,
            (0..extents, 1..=3u64)
                .prop_map(move |(e, k)| {
                    let off = e * es;
                    (off, (k * es).min(size - off))
                })
                .boxed(),
        ),
        (1, Just((0, size)).boxed()),
        (1, (0..=sectors + 2).prop_map(|s| (s * SECTOR, 0)).boxed()),
        (
            1,
            prop_oneof![
                Just((size - SECTOR, 2 * SECTOR)),
                Just((size, SECTOR)),
                Just((1, SECTOR)),
                Just((0, 100)),
                Just((u64::MAX - 511, SECTOR)),
            ]
            .boxed(),
        ),
    ])
    .boxed()
}

/// Host ids the transitions register, grant and act as (extremes included).
const HOSTS: [u64; 4] = [0x10, 0x20, 0x5000_0000_0000_0001, u64::MAX];

/// Host names: short, empty, or one byte too long (refused).
fn host_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z]{1,8}",
        1 => Just(String::new()),
        1 => Just("x".repeat(57)),
    ]
    .boxed()
}

/// LUN sizes: small, whole extents, odd tails, a third of the pool, invalid.
fn lun_size(es: u64, cap: u64) -> BoxedStrategy<u64> {
    Union::new_weighted(vec![
        (6, (1..=24u64).prop_map(|k| k * SECTOR).boxed()),
        (6, (1..=12u64).prop_map(move |k| k * es).boxed()),
        (
            3,
            (1..=6u64, 1..es / SECTOR)
                .prop_map(move |(k, s)| k * es + s * SECTOR)
                .boxed(),
        ),
        (2, Just(cap / 3 / es * es).boxed()),
        (1, Just(cap).boxed()),
        (1, prop_oneof![Just(0), Just(1000), Just(cap + es)].boxed()),
    ])
    .boxed()
}

impl ReferenceStateMachine for Reference {
    type State = RefState;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<RefState> {
        (0..GEOMETRIES.len())
            .prop_map(|i| RefState {
                geometry: i,
                m: Model::new(&GEOMETRIES[i].pool(i)),
            })
            .boxed()
    }

    fn transitions(s: &RefState) -> BoxedStrategy<Op> {
        let g = GEOMETRIES[s.geometry];
        let pool = g.pool(s.geometry);
        let es = u64::from(g.extent_size);
        let cap = pool.capacity_bytes;
        let infos = s.m.luns();
        let max = g.max_luns;
        // Numbers: mostly in use, sometimes free or out of range.
        let used: Vec<u32> = infos.iter().map(|i| i.lun).collect();
        let number = if used.is_empty() {
            (0..=max).boxed()
        } else {
            prop_oneof![4 => proptest::sample::select(used.clone()), 1 => 0..=max].boxed()
        };
        let free: Vec<u32> = (0..max).filter(|n| !used.contains(n)).collect();
        let new_number = if free.is_empty() {
            (0..=max).boxed()
        } else {
            prop_oneof![6 => proptest::sample::select(free), 1 => 0..=max].boxed()
        };
        let attached: Vec<(u32, u64)> = infos
            .iter()
            .filter(|i| i.attached)
            .map(|i| (i.lun, i.size))
            .collect();
        let copies: Vec<u32> = infos
            .iter()
            .filter(|i| i.kind == lunsnap::LunKind::Copy)
            .map(|i| i.lun)
            .collect();
        let copy_number = if copies.is_empty() {
            number.clone()
        } else {
            prop_oneof![5 => proptest::sample::select(copies), 1 => number.clone()].boxed()
        };
        // Hosts: mostly registered ones; grants to revoke: mostly existing ones.
        let registered: Vec<u64> = s.m.hosts().iter().map(|h| h.id).collect();
        let host = move || {
            if registered.is_empty() {
                proptest::sample::select(HOSTS.to_vec()).boxed()
            } else {
                prop_oneof![
                    4 => proptest::sample::select(registered.clone()),
                    1 => proptest::sample::select(HOSTS.to_vec()),
                ]
                .boxed()
            }
        };
        let granted: Vec<(u32, u64)> = used
            .iter()
            .flat_map(|&n| {
                let g = s.m.grants(n).unwrap_or_default();
                g.into_iter().map(move |(h, _)| (n, h))
            })
            .collect();
        let revoke = if granted.is_empty() {
            (number.clone(), host()).boxed()
        } else {
            prop_oneof![
                4 => proptest::sample::select(granted),
                1 => (number.clone(), host()),
            ]
            .boxed()
        };
        // Zeros, a pattern with zeros over some 4 KiB blocks (whole zero extents for
        // zero detection), or a pattern.
        let tag = prop_oneof![
            1 => Just(0u64),
            2 => (1..ZERO_BLOCKS).prop_map(|t| t | ZERO_BLOCKS),
            7 => 1..ZERO_BLOCKS,
        ];
        let on_behalf = {
            let host = host();
            move || prop_oneof![4 => Just(None), 1 => host.clone().prop_map(Some)]
        };
        let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
            (
                6,
                (new_number.clone(), lun_size(es, cap))
                    .prop_map(|(lun, size)| Op::CreateLun { lun, size })
                    .boxed(),
            ),
            (
                7,
                (number.clone(), new_number.clone(), any::<bool>())
                    .prop_map(|(parent, lun, attached)| Op::CreateCopy {
                        parent,
                        lun,
                        attached,
                    })
                    .boxed(),
            ),
            (4, copy_number.clone().prop_map(Op::Attach).boxed()),
            (
                3,
                (
                    proptest::collection::vec((number.clone(), new_number.clone()), 1..=3),
                    any::<bool>(),
                )
                    .prop_map(|(pairs, attached)| Op::CreateCopies { pairs, attached })
                    .boxed(),
            ),
            (
                3,
                proptest::collection::vec(copy_number.clone(), 1..=3)
                    .prop_map(Op::AttachMany)
                    .boxed(),
            ),
            (
                2,
                (
                    number.clone(),
                    prop_oneof![2 => Just(true), 1 => Just(false)],
                )
                    .prop_map(|(lun, online)| Op::SetOnline { lun, online })
                    .boxed(),
            ),
            (
                2,
                (host(), host_name())
                    .prop_map(|(id, name)| Op::AddHost { id, name })
                    .boxed(),
            ),
            (1, host().prop_map(Op::RemoveHost).boxed()),
            (
                5,
                (
                    number.clone(),
                    host(),
                    prop_oneof![Just(Access::Read), Just(Access::ReadWrite)],
                )
                    .prop_map(|(lun, host, access)| Op::Grant { lun, host, access })
                    .boxed(),
            ),
            (
                3,
                revoke
                    .prop_map(|(lun, host)| Op::Revoke { lun, host })
                    .boxed(),
            ),
            (1, any::<bool>().prop_map(Op::SetSecurity).boxed()),
            (3, copy_number.clone().prop_map(Op::Detach).boxed()),
            (4, copy_number.prop_map(Op::Restore).boxed()),
            (
                4,
                (
                    number.clone(),
                    prop_oneof![3 => Just(false), 2 => Just(true)],
                )
                    .prop_map(|(lun, orphan)| Op::Delete { lun, orphan })
                    .boxed(),
            ),
            (3, Just(Op::Flush).boxed()),
            (
                2,
                prop_oneof![Just(1u64), Just(7), Just(100), Just(u64::MAX)]
                    .prop_map(Op::Reclaim)
                    .boxed(),
            ),
            (2, Just(Op::Reopen).boxed()),
            (
                3,
                prop_oneof![
                    Just(CutOutcome::DropAll),
                    Just(CutOutcome::KeepAll),
                    any::<u64>().prop_map(|seed| CutOutcome::Random { seed }),
                    any::<u64>().prop_map(|seed| CutOutcome::Harsh { seed }),
                ]
                .prop_map(Op::PowerCut)
                .boxed(),
            ),
            // I/O on a LUN that may not exist or be detached.
            (
                1,
                (number.clone(), 0..64u64)
                    .prop_map(|(lun, s)| Op::Read {
                        lun,
                        offset: s * SECTOR,
                        len: SECTOR,
                    })
                    .boxed(),
            ),
            (2, any::<bool>().prop_map(Op::SetDetectZeros).boxed()),
            // Queries of LUNs that may not exist, be detached or offline.
            (
                1,
                (on_behalf(), number.clone(), 0..64u64)
                    .prop_map(|(host, lun, s)| Op::Map {
                        host,
                        lun,
                        offset: s * SECTOR,
                        len: SECTOR,
                    })
                    .boxed(),
            ),
            (
                1,
                (on_behalf(), number.clone(), number, 0..4u64)
                    .prop_map(|(host, a, b, k)| Op::Diff {
                        host,
                        a,
                        b,
                        offset: 0,
                        len: k * SECTOR,
                    })
                    .boxed(),
            ),
        ];
        if !attached.is_empty() {
            let pair = (
                proptest::sample::select(attached.clone()),
                proptest::sample::select(attached.clone()),
            );
            arms.push((
                5,
                (on_behalf(), pair)
                    .prop_flat_map(move |(host, ((a, sa), (b, sb)))| {
                        (Just((host, a, b)), io_range(sa.min(sb), es))
                    })
                    .prop_map(|((host, a, b), (offset, len))| Op::Diff {
                        host,
                        a,
                        b,
                        offset,
                        len,
                    })
                    .boxed(),
            ));
            let target = proptest::sample::select(attached);
            let io = move || {
                target
                    .clone()
                    .prop_flat_map(move |(lun, size)| (Just(lun), io_range(size, es)))
            };
            arms.push((
                24,
                (io(), tag.clone())
                    .prop_map(|((lun, (offset, len)), tag)| Op::Write {
                        lun,
                        offset,
                        len,
                        tag,
                    })
                    .boxed(),
            ));
            arms.push((
                8,
                io().prop_map(|(lun, (offset, len))| Op::Read { lun, offset, len })
                    .boxed(),
            ));
            arms.push((
                4,
                io().prop_map(|(lun, (offset, len))| Op::Discard { lun, offset, len })
                    .boxed(),
            ));
            arms.push((
                6,
                (host(), io(), tag)
                    .prop_map(|(host, (lun, (offset, len)), tag)| Op::WriteAs {
                        host,
                        lun,
                        offset,
                        len,
                        tag,
                    })
                    .boxed(),
            ));
            arms.push((
                3,
                (host(), io())
                    .prop_map(|(host, (lun, (offset, len)))| Op::ReadAs {
                        host,
                        lun,
                        offset,
                        len,
                    })
                    .boxed(),
            ));
            arms.push((
                6,
                (on_behalf(), io(), any::<bool>())
                    .prop_map(|(host, (lun, (offset, len)), punch)| Op::WriteZeroes {
                        host,
                        lun,
                        offset,
                        len,
                        punch,
                    })
                    .boxed(),
            ));
            arms.push((
                5,
                (on_behalf(), io())
                    .prop_map(|(host, (lun, (offset, len)))| Op::Map {
                        host,
                        lun,
                        offset,
                        len,
                    })
                    .boxed(),
            ));
            arms.push((
                1,
                (host(), io())
                    .prop_map(|(host, (lun, (offset, len)))| Op::DiscardAs {
                        host,
                        lun,
                        offset,
                        len,
                    })
                    .boxed(),
            ));
        }
        Union::new_weighted(arms).boxed()
    }

    fn apply(mut s: RefState, op: &Op) -> RefState {
        match op {
            Op::Write { .. }
            | Op::WriteAs { .. }
            | Op::WriteZeroes { .. }
            | Op::SetDetectZeros(_)
            | Op::Read { .. }
            | Op::ReadAs { .. }
            | Op::Map { .. }
            | Op::Diff { .. }
            | Op::Reopen
            | Op::Reclaim(_)
            | Op::PowerCut(_) => {}
            op => {
                let _ = lunsnap_proptests::harness::model_op(&mut s.m, op);
            }
        }
        s
    }
}

struct Sut {
    h: Harness<Dev>,
    steps: u64,
    ok: u64,
    /// Successful steps per operation kind (reported with `LUNSNAP_VERBOSE`).
    kinds: std::collections::BTreeMap<String, u64>,
    cuts: u64,
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(r: &RefState) -> Sut {
        let g = GEOMETRIES[r.geometry];
        Sut {
            h: Harness::format(g.device(), &g.format_options()),
            steps: 0,
            ok: 0,
            kinds: Default::default(),
            cuts: 0,
        }
    }

    fn apply(mut sut: Sut, _r: &RefState, op: Op) -> Sut {
        sut.steps += 1;
        let step = sut.steps;
        if let Op::PowerCut(outcome) = op {
            let mut dev = sut.h.take_device();
            let point = dev.crash_point();
            dev.power_cut(outcome).expect("power cut");
            let what = format!("step {step}: power cut {point}, outcome {outcome}");
            let mut a = Array::open(dev, &sut.h.open)
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            let garbled = matches!(outcome, CutOutcome::Harsh { .. });
            sut.h.m = sut
                .h
                .m
                .recover(&mut a, garbled)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            sut.h.a = Some(a);
            sut.cuts += 1;
            return sut;
        }
        match sut.h.step(&op, false) {
            Ok(s) if s.result.is_ok() => {
                sut.ok += 1;
                let d = format!("{op:?}");
                let kind = d.split([' ', '(', '{']).next().unwrap_or_default();
                *sut.kinds.entry(kind.to_string()).or_default() += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("step {step}: {e}"),
        }
        let touched = op.touched(&sut.h.m);
        if let Err(e) = sut.h.verify(Some(&touched)) {
            panic!("step {step}, after {op:?}: {e}");
        }
        sut
    }

    fn teardown(mut sut: Sut, r: RefState) {
        if std::env::var_os("LUNSNAP_VERBOSE").is_some() {
            eprintln!(
                "geometry {}: {} steps, {} succeeded, {} power cuts, {} LUNs, {} early commits",
                r.geometry,
                sut.steps,
                sut.ok,
                sut.cuts,
                sut.h.m.lun_numbers().len(),
                sut.h.early_commits
            );
            static TOTAL: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
                std::sync::Mutex::new(std::collections::BTreeMap::new());
            let mut t = TOTAL.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in &sut.kinds {
                *t.entry(k.clone()).or_default() += v;
            }
            eprintln!("  successful steps so far, by operation: {t:?}");
        }
        if let Err(e) = sut.h.verify(None) {
            panic!("at the end: {e}");
        }
        sut.h.step(&Op::Reopen, false).expect("final reopen");
        if let Err(e) = sut.h.verify(None) {
            panic!("after the final reopen: {e}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: env_count("PROPTEST_CASES", 512) as u32,
        max_shrink_iters: 4096,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/state_machine.txt",
        ))),
        .. Config::default()
    })]

    #[test]
    fn array_matches_the_model(sequential 1..100 => Sut);
}
