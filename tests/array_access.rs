//! Host access control, online/offline LUNs and consistency groups.

mod common;

use common::{assert_clean, mem};
use lunsnap::{Access, Array, Error, FormatOptions, HostInfo, MemDevice, OpenOptions};

const MIB: u64 = 1 << 20;
const H1: u64 = 0x5000_1234_5678_0001;
const H2: u64 = 0x5000_1234_5678_0002;

fn array() -> Array<MemDevice> {
    let dev = mem(128 * MIB);
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 32,
        ..Default::default()
    };
    Array::format(dev, &opts).unwrap()
}

fn reopen(a: Array<MemDevice>) -> Array<MemDevice> {
    Array::open(a.into_device(), &OpenOptions::default()).unwrap()
}

fn sector(a: &mut Array<MemDevice>, lun: u32) -> u8 {
    let mut b = [0u8; 512];
    a.read(lun, 0, &mut b).unwrap();
    b[0]
}

#[test]
fn hosts_are_registered_listed_and_removed() {
    let mut a = array();
    a.add_host(H1, "backup server").unwrap();
    a.add_host(H2, "").unwrap();
    assert_eq!(a.add_host(H1, "again"), Err(Error::HostExists(H1)));
    assert!(matches!(
        a.add_host(7, &"x".repeat(57)),
        Err(Error::InvalidArgument(_))
    ));
    let a_hosts = a.hosts();
    assert_eq!(
        a_hosts,
        vec![
            HostInfo {
                id: H1,
                name: "backup server".into()
            },
            HostInfo {
                id: H2,
                name: String::new()
            }
        ]
    );
    let mut a = reopen(a);
    assert_eq!(a.hosts(), a_hosts);
    a.remove_host(H2).unwrap();
    assert_eq!(a.remove_host(H2), Err(Error::NoSuchHost(H2)));
    assert_eq!(a.hosts().len(), 1);
    assert_clean(&mut a, "");
}

#[test]
fn security_filters_discovery_reads_and_writes() {
    let mut a = array();
    a.create_lun(1, MIB).unwrap();
    a.create_lun(2, MIB).unwrap();
    a.write(1, 0, &[1; 512]).unwrap();
    a.add_host(H1, "reader").unwrap();
    a.add_host(H2, "writer").unwrap();
    let mut b = [0u8; 512];

    // Disabled: every host (even an unknown one) sees and writes everything.
    assert!(!a.security_enabled());
    assert_eq!(a.as_host(99).visible_luns(), vec![1, 2]);
    a.as_host(99).write(2, 0, &[2; 512]).unwrap();

    a.grant(1, H1, Access::Read).unwrap();
    a.grant(1, H2, Access::ReadWrite).unwrap();
    a.set_security(true).unwrap();
    assert!(a.security_enabled());

    // A host without a grant cannot see the LUN: it looks missing.
    assert_eq!(a.as_host(H1).visible_luns(), vec![1]);
    assert_eq!(a.as_host(99).visible_luns(), Vec::<u32>::new());
    assert_eq!(a.as_host(H1).read(2, 0, &mut b), Err(Error::NoSuchLun(2)));
    assert_eq!(a.as_host(H1).read(3, 0, &mut b), Err(Error::NoSuchLun(3)));
    assert_eq!(a.as_host(H1).lun_info(2), Err(Error::NoSuchLun(2)));
    assert_eq!(a.as_host(99).read(1, 0, &mut b), Err(Error::NoSuchLun(1)));
    // A read grant allows reads, not writes.
    a.as_host(H1).read(1, 0, &mut b).unwrap();
    assert_eq!(b, [1; 512]);
    assert_eq!(
        a.as_host(H1).write(1, 0, &[9; 512]),
        Err(Error::ReadOnlyAccess { lun: 1, host: H1 })
    );
    assert_eq!(
        a.as_host(H1).discard(1, 0, 512),
        Err(Error::ReadOnlyAccess { lun: 1, host: H1 })
    );
    assert_eq!(sector(&mut a, 1), 1, "a refused write changed nothing");
    a.as_host(H2).write(1, 0, &[3; 512]).unwrap();
    assert_eq!(sector(&mut a, 1), 3);
    assert_eq!(a.as_host(H2).lun_info(1).unwrap().lun, 1);
    assert_eq!(
        a.grants(1).unwrap(),
        vec![(H1, Access::Read), (H2, Access::ReadWrite)]
    );

    // Persistent, and revocable.
    let mut a = reopen(a);
    assert!(a.security_enabled());
    assert_eq!(a.as_host(H1).visible_luns(), vec![1]);
    a.revoke(1, H1).unwrap();
    assert_eq!(a.revoke(1, H1), Err(Error::NotGranted { lun: 1, host: H1 }));
    assert_eq!(a.revoke(1, 99), Err(Error::NoSuchHost(99)));
    assert_eq!(a.grant(5, H1, Access::Read), Err(Error::NoSuchLun(5)));
    assert_eq!(a.grant(1, 99, Access::Read), Err(Error::NoSuchHost(99)));
    assert_eq!(a.as_host(H1).read(1, 0, &mut b), Err(Error::NoSuchLun(1)));
    // Removing a host removes its grants.
    a.remove_host(H2).unwrap();
    a.add_host(H2, "again").unwrap();
    assert_eq!(a.as_host(H2).visible_luns(), Vec::<u32>::new());
    a.set_security(false).unwrap();
    assert_eq!(a.as_host(H1).visible_luns(), vec![1, 2]);
    assert_clean(&mut a, "");
}

#[test]
fn copies_start_without_grants_keep_them_across_attach_and_lose_them_on_delete() {
    let mut a = array();
    a.create_lun(1, MIB).unwrap();
    a.add_host(H1, "").unwrap();
    a.set_security(true).unwrap();
    a.create_copy(1, 11, false).unwrap();
    assert_eq!(a.grants(11).unwrap(), vec![]);
    a.grant(11, H1, Access::ReadWrite).unwrap();
    a.attach(11).unwrap();
    a.detach(11).unwrap();
    a.attach(11).unwrap();
    assert_eq!(a.grants(11).unwrap(), vec![(H1, Access::ReadWrite)]);
    a.create_copy(11, 12, true).unwrap();
    assert_eq!(a.grants(12).unwrap(), vec![], "a new copy has no grants");
    a.delete(12, false).unwrap();
    a.delete(11, false).unwrap();
    // A new LUN with the same number does not inherit the old grants.
    a.create_lun(11, MIB).unwrap();
    assert_eq!(a.grants(11).unwrap(), vec![]);
    assert_eq!(a.as_host(H1).visible_luns(), Vec::<u32>::new());
    assert_clean(&mut a, "");
    let mut a = reopen(a);
    assert_clean(&mut a, "");
}

#[test]
fn offline_luns_refuse_io_but_not_management() {
    let mut a = array();
    a.create_lun(1, MIB).unwrap();
    a.write(1, 0, &[5; 512]).unwrap();
    a.set_online(1, false).unwrap();
    assert!(!a.lun_info(1).unwrap().online);
    let mut b = [0u8; 512];
    assert_eq!(a.read(1, 0, &mut b), Err(Error::Offline(1)));
    assert_eq!(a.write(1, 0, &b), Err(Error::Offline(1)));
    assert_eq!(a.discard(1, 0, 512), Err(Error::Offline(1)));
    // Management still works: a copy of an offline LUN is online.
    a.create_copy(1, 2, true).unwrap();
    assert!(a.lun_info(2).unwrap().online);
    assert_eq!(sector(&mut a, 2), 5);
    assert_eq!(a.set_online(9, false), Err(Error::NoSuchLun(9)));
    let mut a = reopen(a);
    assert_eq!(a.read(1, 0, &mut b), Err(Error::Offline(1)));
    a.set_online(1, true).unwrap();
    assert_eq!(sector(&mut a, 1), 5);
    assert_clean(&mut a, "");
}

#[test]
fn consistency_groups_are_one_point_in_time_and_all_or_nothing() {
    let mut a = array();
    for l in 1..=3 {
        a.create_lun(l, MIB).unwrap();
        a.write(l, 0, &[l as u8; 512]).unwrap();
    }
    a.create_copies(&[(1, 11), (2, 12), (3, 13)], true).unwrap();
    for l in 1..=3 {
        assert_eq!(sector(&mut a, 10 + l), l as u8);
        assert_eq!(a.lun_info(10 + l).unwrap().parent, Some(l));
    }
    let gens: Vec<u64> = (11..=13)
        .map(|l| a.lun_info(l).unwrap().attached_generation)
        .collect();
    assert!(gens.iter().all(|&g| g == gens[0]), "one commit: {gens:?}");

    // All or nothing: the last pair is bad, so no copy is made.
    let before = a.luns().unwrap();
    let pool = a.pool_info();
    for bad in [
        vec![(1, 21), (2, 22), (9, 23)], // missing parent
        vec![(1, 21), (2, 21)],          // copy number twice
        vec![(1, 21), (21, 22)],         // copy is a parent in the group
        vec![(1, 21), (2, 12)],          // number in use
        vec![(1, 21), (2, 99)],          // out of range
        vec![],                          // empty
    ] {
        assert!(a.create_copies(&bad, true).is_err(), "{bad:?}");
        assert_eq!(a.luns().unwrap(), before, "{bad:?}");
        assert_eq!(a.pool_info(), pool, "{bad:?}");
    }
    // Not enough space for the whole group: refused whole.
    a.create_lun(4, a.pool_info().unreserved_bytes - MIB)
        .unwrap();
    let before = a.luns().unwrap();
    assert!(matches!(
        a.create_copies(&[(1, 21), (2, 22)], true),
        Err(Error::NoSpace { .. })
    ));
    assert_eq!(a.luns().unwrap(), before);
    a.delete(4, false).unwrap();

    // attach_many refreshes at one point in time.
    for l in 1..=3 {
        a.write(l, 0, &[40 + l as u8; 512]).unwrap();
    }
    a.attach_many(&[11, 12, 13]).unwrap();
    for l in 1..=3 {
        assert_eq!(sector(&mut a, 10 + l), 40 + l as u8);
    }
    // A group holding a copy and its own copy: both take the images from before.
    a.create_copy(11, 31, true).unwrap();
    a.write(1, 0, &[77; 512]).unwrap();
    a.write(11, 0, &[88; 512]).unwrap();
    a.attach_many(&[11, 31]).unwrap();
    assert_eq!(sector(&mut a, 11), 77, "11 takes LUN 1 now");
    assert_eq!(
        sector(&mut a, 31),
        88,
        "31 takes 11 as it was before the group"
    );
    assert_eq!(
        a.attach_many(&[11, 11]),
        Err(Error::InvalidArgument(
            "a LUN number appears twice in the group"
        ))
    );
    assert_eq!(a.attach_many(&[11, 1]), Err(Error::NotACopy(1)));
    assert_clean(&mut a, "");
    let mut a = reopen(a);
    assert_clean(&mut a, "");
}

#[test]
fn host_count_is_bounded_and_every_grant_fits_in_the_metadata() {
    let mut a = array();
    for l in 0..32 {
        a.create_lun(l, 4096).unwrap();
    }
    for h in 0..u64::from(lunsnap::MAX_HOSTS) {
        a.add_host(h, &format!("host {h}")).unwrap();
    }
    assert_eq!(
        a.add_host(1000, "one too many"),
        Err(Error::TooManyHosts {
            max: lunsnap::MAX_HOSTS
        })
    );
    // Every LUN granted to every host: provisioned at format, never exhausted.
    for h in 0..u64::from(lunsnap::MAX_HOSTS) {
        for l in 0..32 {
            a.grant(l, h, Access::ReadWrite).unwrap();
        }
    }
    assert_clean(&mut a, "");
    let mut a = reopen(a);
    assert_eq!(a.grants(31).unwrap().len(), 64);
    a.remove_host(0).unwrap();
    a.add_host(1000, "fits again").unwrap();
    assert_clean(&mut a, "");
}

#[test]
fn host_names_of_56_bytes_fit() {
    let mut a = array();
    let name = "n".repeat(lunsnap::MAX_HOST_NAME);
    a.add_host(H1, &name).unwrap();
    let a = reopen(a);
    assert_eq!(a.hosts()[0].name, name);
}

/// An array with host H1, whose hosts tree (root slot 1) `f` then replaces
/// through the engine; committed and opened as an array.
fn with_hosts_tree(
    f: impl FnOnce(&mut lunsnap::engine::Engine<MemDevice>) -> lunsnap::engine::Tree,
) -> Result<Array<MemDevice>, Error> {
    let mut a = array();
    a.add_host(H1, "h").unwrap();
    let dev = a.close().unwrap();
    let mut e =
        lunsnap::engine::Engine::open(dev, &lunsnap::engine::OpenOptions::default()).unwrap();
    let t = f(&mut e);
    if let Some(old) = e.set_root(1, Some(t)).unwrap() {
        e.drop_tree(old).unwrap();
    }
    e.commit().unwrap();
    Array::open(e.into_device(), &OpenOptions::default())
}

/// A host record: index, name length (`len`, whatever `name` holds), name.
fn host_record(index: u32, len: u8, name: &[u8]) -> [u8; 64] {
    let mut v = [0u8; 64];
    v[..4].copy_from_slice(&index.to_le_bytes());
    v[4] = len;
    v[8..8 + name.len()].copy_from_slice(name);
    v
}

#[test]
fn open_refuses_a_damaged_hosts_table() {
    // Right kind, wrong record size.
    let r = with_hosts_tree(|e| {
        let mut t = e
            .create_tree(32, lunsnap::engine::ValueKind::Opaque)
            .unwrap();
        e.insert(&mut t, H1, &[0; 32]).unwrap();
        t
    });
    match r {
        Err(Error::Corrupt {
            what: "hosts table has the wrong shape",
            ..
        }) => {}
        r => panic!("wrong shape: {:?}", r.map(|a| a.hosts())),
    }
    // A host index beyond the 64 bitmap bits; a name longer than 56 bytes; a name
    // that is not UTF-8.
    for (v, what) in [
        (host_record(64, 1, b"h"), "index 64"),
        (host_record(u32::MAX, 1, b"h"), "index 2^32 - 1"),
        (host_record(0, 57, &[b'n'; 56]), "57-byte name"),
        (host_record(0, 255, b"h"), "255-byte name"),
        (host_record(0, 2, &[0xff, 0xfe]), "not UTF-8"),
    ] {
        let r = with_hosts_tree(|e| {
            let mut t = e
                .create_tree(64, lunsnap::engine::ValueKind::Opaque)
                .unwrap();
            e.insert(&mut t, H1, &v).unwrap();
            t
        });
        match r {
            Err(Error::Corrupt {
                what: "host record has an invalid name or index",
                ..
            }) => {}
            r => panic!("{what}: {:?}", r.map(|a| a.hosts())),
        }
    }
    // The bounds are valid: index 63, a 56-byte name.
    let a = with_hosts_tree(|e| {
        let mut t = e
            .create_tree(64, lunsnap::engine::ValueKind::Opaque)
            .unwrap();
        e.insert(&mut t, H2, &host_record(63, 56, &[b'n'; 56]))
            .unwrap();
        t
    })
    .expect("index 63, 56-byte name");
    assert_eq!(a.hosts()[0].id, H2);
    assert_eq!(a.hosts()[0].name.len(), 56);
}

#[test]
fn grants_change_one_host_at_a_time() {
    let mut a = array();
    a.create_lun(0, MIB).unwrap();
    a.add_host(H1, "one").unwrap(); // index 0
    a.add_host(H2, "two").unwrap(); // index 1
    a.set_security(true).unwrap();
    a.grant(0, H1, Access::ReadWrite).unwrap();
    a.grant(0, H2, Access::ReadWrite).unwrap();
    // Downgrading one host leaves the other's write grant.
    a.grant(0, H2, Access::Read).unwrap();
    assert_eq!(
        a.grants(0).unwrap(),
        vec![(H1, Access::ReadWrite), (H2, Access::Read)]
    );
    assert_eq!(
        a.as_host(H2).write(0, 0, &[1; 512]),
        Err(Error::ReadOnlyAccess { lun: 0, host: H2 })
    );
    a.as_host(H1).write(0, 0, &[1; 512]).unwrap();
    // Revoking the second host (index 1) leaves the first's grant.
    a.revoke(0, H2).unwrap();
    assert_eq!(a.grants(0).unwrap(), vec![(H1, Access::ReadWrite)]);
    assert_eq!(a.revoke(0, H2), Err(Error::NotGranted { lun: 0, host: H2 }));
    assert_eq!(a.as_host(H2).visible_luns(), Vec::<u32>::new());
    let mut a = reopen(a);
    assert_eq!(a.grants(0).unwrap(), vec![(H1, Access::ReadWrite)]);
    // Upgrading again works.
    a.grant(0, H2, Access::Read).unwrap();
    a.grant(0, H2, Access::ReadWrite).unwrap();
    a.as_host(H2).write(0, 0, &[2; 512]).unwrap();
    assert_clean(&mut a, "");
}

#[test]
fn a_removed_hosts_grants_do_not_pass_to_the_next_host() {
    let mut a = array();
    a.create_lun(0, MIB).unwrap();
    a.create_lun(1, MIB).unwrap();
    a.add_host(H1, "old").unwrap();
    a.grant(0, H1, Access::Read).unwrap();
    a.grant(1, H1, Access::ReadWrite).unwrap();
    a.remove_host(H1).unwrap();
    // H2 takes the freed host index.
    a.add_host(H2, "new").unwrap();
    a.set_security(true).unwrap();
    for l in [0, 1] {
        assert_eq!(a.grants(l).unwrap(), vec![]);
    }
    assert_eq!(a.as_host(H2).visible_luns(), Vec::<u32>::new());
    let mut a = reopen(a);
    assert_eq!(a.as_host(H2).visible_luns(), Vec::<u32>::new());
    assert_clean(&mut a, "");
}
