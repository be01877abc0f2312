//! `fakewatch-train keygen` and `sign`: ed25519 keys and bundle signatures.
//!
//! The secret key is 64 hex digits in a file readable by its owner only; the
//! public key (`.pub`, 64 hex digits) goes to the devices (`fakewatch
//! --bundle-key`, `FAKEWATCH_BUNDLE_KEY`, `fw_open_signed`), which then refuse
//! bundles it did not sign.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fakewatch_sdk::bundle::{public_key, sign, Bundle};

/// Writes a new key pair: `OUT` (secret, mode 0600) and `OUT.pub`.
pub fn keygen(out: &Path) -> Result<PathBuf> {
    if out.exists() {
        bail!("{} exists: refusing to overwrite a key", out.display());
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| anyhow::anyhow!("reading the system random source: {e}"))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    writeln!(f, "{hex}")?;
    let public = pub_path(out);
    std::fs::write(&public, format!("{}\n", public_key(&secret)))
        .with_context(|| format!("writing {}", public.display()))?;
    Ok(public)
}

fn pub_path(secret: &Path) -> PathBuf {
    let mut p = secret.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Reads a secret key file (64 hex digits).
fn read_secret(path: &Path) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t = text.trim();
    if t.len() != 64 {
        bail!("{}: a secret key is 64 hex digits", path.display());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
            .with_context(|| format!("{}: not hex", path.display()))?;
    }
    Ok(out)
}

/// Checks the bundle (sha256 of every file), signs its `bundle.json`, and
/// verifies the signature; returns the public key.
pub fn sign_bundle(bundle: &Path, key: &Path) -> Result<String> {
    Bundle::load(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let secret = read_secret(key)?;
    let public = sign(bundle, &secret)?;
    Bundle::load_signed(bundle, &public).context("verifying the new signature")?;
    Ok(public.to_string())
}
