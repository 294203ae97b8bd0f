//! `create_copies` gives the error its documentation names whatever the order of the
//! pairs: the group's shape first, then each pair in turn, then the reservation.

use lunsnap::{Array, Error, FormatOptions, MemDevice};

fn array() -> Array<MemDevice> {
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 16,
        ..Default::default()
    };
    let mut a = Array::format(MemDevice::new(4096, 4096).expect("device"), &opts).expect("format");
    a.create_lun(0, 64 << 10).expect("LUN 0");
    a.create_lun(1, 64 << 10).expect("LUN 1");
    a
}

#[test]
fn the_group_shape_is_judged_before_any_pair() {
    let mut a = array();
    let gen = a.pool_info().generation;
    let shape = Error::InvalidArgument("a copy in the group is also a parent in the group");
    // A copy that is also a parent in the group, in either order, with or without
    // other faults in the pairs.
    for pairs in [
        [(0, 10), (10, 11)],
        [(10, 11), (0, 10)],
        [(1, 0), (0, 11)],
        [(0, 11), (1, 0)],
    ] {
        assert_eq!(
            a.create_copies(&pairs, true),
            Err(shape.clone()),
            "{pairs:?}"
        );
    }
    assert_eq!(
        a.create_copies(&[(0, 10), (1, 10)], true),
        Err(Error::InvalidArgument(
            "a LUN number appears twice in the group"
        ))
    );
    assert_eq!(
        a.create_copies(&[], true),
        Err(Error::InvalidArgument("an empty consistency group"))
    );
    // Then each pair in order, as create_copy checks one.
    assert_eq!(
        a.create_copies(&[(0, 10), (5, 11)], true),
        Err(Error::NoSuchLun(5))
    );
    assert_eq!(
        a.create_copies(&[(0, 1), (5, 11)], true),
        Err(Error::LunExists(1))
    );
    assert_eq!(
        a.create_copies(&[(0, 10), (1, 99)], true),
        Err(Error::LunOutOfRange {
            lun: 99,
            max_luns: 16
        })
    );
    assert_eq!(a.pool_info().generation, gen, "nothing changed");
    a.create_copies(&[(0, 10), (1, 11)], true)
        .expect("a good group");
    assert_eq!(a.lun_numbers(), [0, 1, 10, 11]);
}
