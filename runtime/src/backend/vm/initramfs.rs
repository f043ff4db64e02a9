//! The guest's initramfs: the static agent as `/init`, `/bin/strata` linked to it (the agent is
//! also the runtime), the mount points it needs and `/dev/console`. Written as a cpio "newc"
//! archive once per agent binary and kept in strata's cache.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const DIRS: &[&str] = &["bin", "dev", "proc", "sys", "run", "tmp", "mnt"];

struct Writer<W: Write> {
    out: W,
    offset: usize,
    ino: u32,
}

impl<W: Write> Writer<W> {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime: reproducible archives
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.offset += b.len();
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - self.offset % 4) % 4;
        self.write(&[0u8; 3][..n])
    }
}

/// Writes the archive for `agent` to `out`.
pub fn write(agent: &[u8], out: impl Write) -> std::io::Result<()> {
    let mut w = Writer {
        out,
        offset: 0,
        ino: 0,
    };
    for d in DIRS {
        w.entry(d, 0o040755, (0, 0), &[])?;
    }
    w.entry("init", 0o100755, (0, 0), agent)?;
    w.entry("bin/strata", 0o120777, (0, 0), b"/init")?;
    // The kernel opens /dev/console for init before anything is mounted.
    w.entry("dev/console", 0o020600, (5, 1), &[])?;
    w.entry("TRAILER!!!", 0, (0, 0), &[])?;
    w.out.flush()
}

/// The cached initramfs for `agent`, built on first use. Keyed by the agent's path, size and
/// modification time, so a rebuilt agent gets a new archive.
pub fn cached(agent: &Path, cache: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(agent).with_context(|| {
        format!(
            "vm backend: the guest agent {} (build it with guest-agent/build)",
            agent.display()
        )
    })?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        agent,
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        strata_agent_protocol::VERSION,
    )
        .hash(&mut h);
    let dir = cache.join("initramfs");
    let path = dir.join(format!("{:016x}.cpio", h.finish()));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let data = std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        std::process::id(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    write(&data, std::io::BufWriter::new(file))?;
    // Concurrent creates may both build; the rename makes either result whole.
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_newc_with_init_and_console() {
        let mut out = Vec::new();
        write(b"\x7fELF-agent", &mut out).unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        for name in [
            "init\0",
            "bin/strata\0",
            "dev/console\0",
            "TRAILER!!!\0",
            "\x7fELF-agent",
        ] {
            assert!(text.contains(name), "{name:?} missing");
        }
        // Checked with the cpio tool where it exists: the listing must match.
        if let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            child.stdin.take().unwrap().write_all(&out).unwrap();
            let listing = child.wait_with_output().unwrap();
            let names = String::from_utf8_lossy(&listing.stdout);
            assert!(names.lines().any(|l| l == "init"), "{names}");
            assert!(names.lines().any(|l| l == "dev/console"), "{names}");
        }
    }
}
