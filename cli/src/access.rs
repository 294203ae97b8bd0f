//! Host access control (the Secure Manager of HP's Business Copy VA guide, `armsecure`) and LUN states:
//! `host add|remove|list`, `grant`, `revoke`, `security enable|disable`,
//! `lun offline|online`. Every change is committed before the command exits.

use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;

use serde_json::json;

use crate::cmd::{change, change_exposed, Done};
use crate::fail::Result;
use crate::image::{Access, Va};
use crate::json::{self, host_id};
use crate::target::{self, Place};

/// Parses a HOST: exactly 16 hex digits (a 64-bit, WWN-like id), either case.
pub fn parse_host(s: &str) -> Result<u64, String> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a host id: give exactly 16 hex digits, e.g. 50060b0000c26204"
        ));
    }
    u64::from_str_radix(s, 16).map_err(|e| format!("{s:?} is not a host id: {e}"))
}

/// Parses a host's label: at most [`lunsnap::MAX_HOST_NAME`] bytes.
pub fn parse_host_name(s: &str) -> Result<String, String> {
    if s.len() > lunsnap::MAX_HOST_NAME {
        return Err(format!(
            "the name is {} bytes long: a host's name is at most {} bytes",
            s.len(),
            lunsnap::MAX_HOST_NAME
        ));
    }
    Ok(s.to_string())
}

/// `--access`: what a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// Discover and read the LUN
    Read,
    /// Discover, read and write the LUN
    Write,
}

impl From<Level> for lunsnap::Access {
    fn from(l: Level) -> Self {
        match l {
            Level::Read => lunsnap::Access::Read,
            Level::Write => lunsnap::Access::ReadWrite,
        }
    }
}

/// `host add IMAGE HOST [--name NAME] [--json]`
pub fn host_add(
    place: &Place,
    how: (&Path, bool),
    host: u64,
    name: &str,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.add_host(host, name)?;
        let text = if name.is_empty() {
            format!("registered host {}", host_id(host))
        } else {
            format!("registered host {} ({name})", host_id(host))
        };
        Ok(Done::new(
            text,
            "registered",
            json!({"host": host_id(host), "name": name}),
        ))
    };
    change(place, how, op, out)
}

/// `host remove IMAGE HOST [--json]`
pub fn host_remove(place: &Place, how: (&Path, bool), host: u64, out: &mut String) -> Result<u8> {
    let op = |va: &mut Va| {
        va.remove_host(host)?;
        Ok(Done::new(
            format!("removed host {} and its grants", host_id(host)),
            "removed",
            json!({"host": host_id(host)}),
        ))
    };
    change(place, how, op, out)
}

/// `host list IMAGE [--json]`
pub fn host_list(place: &Place, path: &Path, as_json: bool, out: &mut String) -> Result<u8> {
    let hosts = place.open(path, Access::Read)?.with(|va| Ok(va.hosts()))?;
    if as_json {
        let v: Vec<json::Host> = hosts.iter().map(json::Host::from).collect();
        out.push_str(&json::render(&v));
        return Ok(0);
    }
    let _ = writeln!(out, "{:<16}  NAME", "HOST");
    for h in &hosts {
        let name = if h.name.is_empty() { "-" } else { &h.name };
        let _ = writeln!(out, "{}  {name}", host_id(h.id));
    }
    Ok(0)
}

/// `grant IMAGE LUN HOST --access read|write [--json]`
pub fn grant(
    place: &Place,
    how: (&Path, bool),
    (lun, host): (u32, u64),
    level: Level,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.grant(lun, host, level.into())?;
        let what = match level {
            Level::Read => "read",
            Level::Write => "read-write",
        };
        let note = if va.security_enabled() {
            ""
        } else {
            " (security is disabled: it takes effect with `security enable`)"
        };
        Ok(Done::new(
            format!(
                "granted host {} {what} access to LUN {lun}{note}",
                host_id(host)
            ),
            "granted",
            json!({
                "lun": lun,
                "host": host_id(host),
                "access": json::access(level.into()),
                "security": va.security_enabled(),
            }),
        ))
    };
    change(place, how, op, out)
}

/// `revoke IMAGE LUN HOST [--json]`
pub fn revoke(
    place: &Place,
    how: (&Path, bool),
    (lun, host): (u32, u64),
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.revoke(lun, host)?;
        Ok(Done::new(
            format!("revoked host {}'s access to LUN {lun}", host_id(host)),
            "revoked",
            json!({"lun": lun, "host": host_id(host)}),
        ))
    };
    change(place, how, op, out)
}

/// `security enable|disable IMAGE [--json]`
pub fn security(place: &Place, how: (&Path, bool), enabled: bool, out: &mut String) -> Result<u8> {
    let op = |va: &mut Va| {
        va.set_security(enabled)?;
        let text = if enabled {
            String::from("security enabled: each host sees only the LUNs it is granted")
        } else {
            String::from("security disabled: every host sees every LUN")
        };
        Ok(Done::new(text, "security", json!({"enabled": enabled})))
    };
    change(place, how, op, out)
}

/// `lun offline|online IMAGE LUN [--json]`; `--force` (offline only) ends the NBD
/// connections that have the LUN open, which would otherwise refuse it.
pub fn lun_online(
    place: &Place,
    how: (&Path, bool, bool),
    lun: u32,
    online: bool,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.set_online(lun, online)?;
        let text = if online {
            format!("LUN {lun} is online")
        } else {
            format!("LUN {lun} is offline: I/O is refused until `lun online`")
        };
        let verb = if online { "online" } else { "offline" };
        Ok(Done::new(text, verb, json!({"lun": lun})))
    };
    // Bringing a LUN online changes nothing its (absent) clients see.
    let exposed = |va: &Va| {
        if online {
            Vec::new()
        } else {
            target::existing(va, lun)
        }
    };
    change_exposed(place, how, exposed, op, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids() {
        assert_eq!(parse_host("0000000000000001"), Ok(1));
        assert_eq!(parse_host("50060B0000C26204"), Ok(0x5006_0b00_00c2_6204));
        assert_eq!(parse_host("ffffffffffffffff"), Ok(u64::MAX));
        for bad in [
            "",
            "1",
            "000000000000001",
            "00000000000000001",
            "0x00000000000001",
            "000000000000000g",
            "+000000000000001",
            " 000000000000001",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} accepted");
        }
    }
}
