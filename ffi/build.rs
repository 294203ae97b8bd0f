//! Gives the shared library (the cdylib) its SONAME on Linux, so that programs
//! linked against the installed `liblunsnap.so` (`make install`) record the ABI they
//! were built for. Before 1.0 every minor version may change the ABI (0.2 did), so
//! the SONAME carries it: `liblunsnap.so.0.2` (from 1.0 on, `liblunsnap.so.MAJOR`).
//! The file cargo builds is `liblunsnap_ffi.so`; `make install` installs it as
//! `liblunsnap.so.0.2.0` with the links `liblunsnap.so.0.2` and `liblunsnap.so`.

fn main() {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let soname = if major == "0" {
        format!("liblunsnap.so.0.{minor}")
    } else {
        format!("liblunsnap.so.{major}")
    };
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
