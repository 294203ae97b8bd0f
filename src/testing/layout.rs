//! Facts of the on-disk layout, for tests that forge damaged images or check the
//! metadata provisioning: the metadata page size and magic, the checksum sealer,
//! B-tree node capacities, space-map fan-outs and the array's worst-case metadata
//! bound. The byte-level format is documented in docs/FORMAT.md; nothing here is
//! needed to use an array.

pub use crate::array::worst_case_metadata_pages;
pub use crate::btree::node::max_entries;
pub use crate::store::page::{seal, MAGIC as PAGE_MAGIC, PAGE_SIZE};
pub use crate::store::space_map::{COUNTS_PER_LEAF, PTRS_PER_INDEX};
