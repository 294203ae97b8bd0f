//! Exports: every LUN and attached copy is an NBD export named by its number, and
//! what a connecting host may see and open follows the array's host security.

use lunsnap::{Error, LunKind, LunStatus};

use crate::shared::ServedArray;

/// Who a connection acts for: the array's administrator (a listener bound to no
/// host), or a registered host, whose grants decide what it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Every LUN, read-write (the array's own access).
    Admin,
    /// The host with this id, under host security.
    Host(u64),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Admin => f.write_str("admin"),
            Identity::Host(h) => write!(f, "host {h:016x}"),
        }
    }
}

/// An export a client may open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The LUN.
    pub lun: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Writes are refused (the host has a read grant only).
    pub read_only: bool,
    /// A line for people (`NBD_INFO_DESCRIPTION`, `NBD_REP_SERVER`).
    pub description: String,
}

/// Why an export cannot be opened, with the message the client is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such export (or one the host may not see: it is missing to it).
    Unknown(String),
    /// It exists but cannot be opened now (offline LUN, detached copy).
    Unavailable(String),
}

/// The LUN number an export name stands for: its decimal number, exactly.
pub fn lun_of(name: &str) -> Option<u32> {
    let n: u32 = name.parse().ok()?;
    (n.to_string() == name).then_some(n)
}

/// The LUN's status as `who` sees it (a LUN it may not discover is missing).
fn status(a: &mut ServedArray, who: Identity, lun: u32) -> Result<LunStatus, Error> {
    match who {
        Identity::Admin => a.lun_status(lun),
        Identity::Host(h) => a.as_host(h).lun_status(lun),
    }
}

/// May `who` write LUN `lun`?
fn writable(a: &mut ServedArray, who: Identity, lun: u32) -> bool {
    match who {
        Identity::Admin => true,
        Identity::Host(h) => a.as_host(h).authorize(lun, true).is_ok(),
    }
}

fn describe(s: &LunStatus) -> String {
    match (s.kind, s.parent) {
        (LunKind::Copy, Some(p)) => format!("LUN {}: business copy of LUN {p}", s.lun),
        (LunKind::Copy, None) => format!("LUN {}: business copy (parent deleted)", s.lun),
        (LunKind::Lun, _) => format!("LUN {}", s.lun),
    }
}

/// Resolves export `name` for `who`.
pub fn open(a: &mut ServedArray, who: Identity, name: &str) -> Result<Export, Refusal> {
    let unknown = || {
        Refusal::Unknown(format!("no export named {name:?}: exports are LUN numbers this host may see (see NBD_OPT_LIST)"))
    };
    let lun = lun_of(name).ok_or_else(unknown)?;
    let s = status(a, who, lun).map_err(|_| unknown())?;
    if !s.attached {
        return Err(Refusal::Unavailable(format!(
            "LUN {lun} is a detached copy: it holds no data until attached"
        )));
    }
    if !s.online {
        return Err(Refusal::Unavailable(format!(
            "LUN {lun} is offline: bring it online first"
        )));
    }
    Ok(Export {
        lun,
        size: s.size,
        read_only: !writable(a, who, lun),
        description: describe(&s),
    })
}

/// The exports `who` may discover and open, in LUN order.
pub fn list(a: &mut ServedArray, who: Identity) -> Vec<Export> {
    let luns = match who {
        Identity::Admin => a.lun_numbers(),
        Identity::Host(h) => a.as_host(h).visible_luns(),
    };
    luns.into_iter()
        .filter_map(|n| open(a, who, &n.to_string()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact_decimal_numbers() {
        assert_eq!(lun_of("11"), Some(11));
        assert_eq!(lun_of("0"), Some(0));
        for bad in ["", "011", "+1", " 1", "1 ", "x", "4294967296", "-1"] {
            assert_eq!(lun_of(bad), None, "{bad:?}");
        }
    }
}
