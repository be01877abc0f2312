//! `fakewatch run --config` settings (TOML, or JSON by byte 0's low bit):
//! edge-app's settings parser, called through its library. Errors are fine;
//! panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fakewatch_edge::live::config;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = config::parse(text, mode & 1 == 0);
});
