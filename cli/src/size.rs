//! Sizes on the command line (`4096`, `64M`, `1T`, `16KiB`) and in the output.

/// Bytes per device block of the images this tool formats: image sizes are multiples of it.
pub const IMAGE_BLOCK: u64 = 4096;

/// Parses a size: a number of bytes, optionally followed by `K`, `M`, `G` or `T`
/// (powers of 1024, either case, optionally spelled `KiB`, `MiB`, ...).
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size: give bytes, or a number with a K, M, G or T suffix"
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => {
            return Err(format!(
                "{s:?} is not a size: the suffix must be K, M, G or T (powers of 1024)"
            ))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is too large for a size"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large for a size"))
}

/// An image size: a SIZE that is a positive multiple of 4 KiB.
pub fn image_size(s: &str) -> Result<u64, String> {
    let n = parse(s)?;
    if n == 0 || !n.is_multiple_of(IMAGE_BLOCK) {
        return Err(format!(
            "{s:?}: the image size must be a positive multiple of 4 KiB (4096 bytes)"
        ));
    }
    Ok(n)
}

/// An extent size: a SIZE that is a power of two from 4 KiB to 1 MiB.
pub fn extent_size(s: &str) -> Result<u32, String> {
    let n = parse(s)?;
    let valid = u32::try_from(n).is_ok_and(lunsnap::is_valid_extent_size);
    if !valid {
        return Err(format!(
            "{s:?}: the extent size must be a power of two from 4K to 1M"
        ));
    }
    u32::try_from(n).map_err(|_| format!("{s:?}: extent size too large"))
}

/// A LUN size: a SIZE that is a positive multiple of 512 bytes.
pub fn lun_size(s: &str) -> Result<u64, String> {
    let n = parse(s)?;
    if n == 0 || !n.is_multiple_of(lunsnap::SECTOR) {
        return Err(format!(
            "{s:?}: a LUN size must be a positive multiple of 512 bytes (whole sectors)"
        ));
    }
    Ok(n)
}

/// An offset or length in a LUN: a SIZE that is a multiple of 512 bytes.
pub fn sectors(s: &str) -> Result<u64, String> {
    let n = parse(s)?;
    if !n.is_multiple_of(lunsnap::SECTOR) {
        return Err(format!(
            "{s:?} is not a multiple of 512: LUNs are read and written in whole 512-byte \
             sectors"
        ));
    }
    Ok(n)
}

/// A LUN number: 0 to 4294967295 (the image decides how many it has).
pub fn lun(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.starts_with('-') && t.len() > 1 && t[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a LUN number: LUN numbers are 0 or more"
        ));
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a LUN number: give a number, e.g. 1"));
    }
    t.parse()
        .map_err(|_| format!("{s:?} is not a LUN number: at most 4294967295"))
}

/// Seconds to wait: a number, with decimals if need be (`5`, `0.5`), at most a day.
pub fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let valid = !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes().filter(|&b| b == b'.').count() <= 1;
    let n: f64 = match t.parse() {
        Ok(n) if valid => n,
        _ => {
            return Err(format!(
                "{s:?} is not a number of seconds: give e.g. 10 or 0.5"
            ))
        }
    };
    if n > 86_400.0 {
        return Err(format!("{s:?}: wait at most 86400 seconds (a day)"));
    }
    Ok(std::time::Duration::from_secs_f64(n))
}

/// A size for people: exact in the largest binary unit that divides it, else one decimal.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n == 0 {
        return String::from("0 B");
    }
    let mut i = 0;
    while i + 1 < UNITS.len() && n >> (10 * (i + 1)) > 0 {
        i += 1;
    }
    let unit = 1u64 << (10 * i);
    if n.is_multiple_of(unit) {
        format!("{} {}", n / unit, UNITS[i])
    } else {
        format!("{:.1} {}", n as f64 / unit as f64, UNITS[i])
    }
}

/// A size for people with its exact bytes: `256 MiB (268435456 bytes)`, `512 bytes`.
pub fn both(n: u64) -> String {
    if n < 1024 {
        format!("{n} byte{}", if n == 1 { "" } else { "s" })
    } else {
        format!("{} ({n} bytes)", human(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("512b"), Ok(512));
        assert_eq!(parse("4K"), Ok(4096));
        assert_eq!(parse("4k"), Ok(4096));
        assert_eq!(parse("64M"), Ok(64 << 20));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("3G"), Ok(3 << 30));
        assert_eq!(parse("1T"), Ok(1 << 40));
        assert_eq!(parse("16777215T"), Ok(16_777_215 << 40));
        for bad in [
            "",
            "M",
            "-1",
            "1.5G",
            "12X",
            "1 G",
            "1KB",
            "16777216T",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn image_and_extent_sizes() {
        assert_eq!(image_size("1M"), Ok(1 << 20));
        assert!(image_size("0").is_err());
        assert!(image_size("1000").is_err());
        assert_eq!(extent_size("16K"), Ok(16384));
        assert_eq!(extent_size("1M"), Ok(1 << 20));
        assert!(extent_size("2K").is_err());
        assert!(extent_size("2M").is_err());
        assert!(extent_size("12K").is_err());
    }

    #[test]
    fn lun_numbers_sectors_and_seconds() {
        assert_eq!(lun("0"), Ok(0));
        assert_eq!(lun("4294967295"), Ok(u32::MAX));
        assert!(lun("-1").unwrap_err().contains("0 or more"));
        assert!(lun("x").unwrap_err().contains("give a number"));
        assert!(lun("4294967296").is_err());
        assert!(lun("").is_err());
        assert_eq!(sectors("1M"), Ok(1 << 20));
        assert_eq!(sectors("0"), Ok(0));
        assert!(sectors("100")
            .unwrap_err()
            .contains("not a multiple of 512"));
        assert_eq!(lun_size("4M"), Ok(4 << 20));
        assert!(lun_size("0").is_err());
        assert!(lun_size("1000").is_err());
        assert_eq!(seconds("2"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(seconds("0.5"), Ok(std::time::Duration::from_millis(500)));
        for bad in ["", "-1", "1e3", "1.2.3", "x", "100000"] {
            assert!(seconds(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(16384), "16 KiB");
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(1 << 40), "1 TiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
        assert_eq!(both(256 << 20), "256 MiB (268435456 bytes)");
        assert_eq!(both(512), "512 bytes");
        assert_eq!(both(1), "1 byte");
    }
}
