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
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(16384), "16 KiB");
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(1 << 40), "1 TiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }
}
