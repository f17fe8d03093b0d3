//! File and process calls the standard library does not offer.

use std::fs::File;

/// Whether a process with this pid exists. One that exists but may not be
/// signalled by us counts as alive; so does any pid off Unix, where this is
/// not asked.
pub fn pid_alive(pid: i32) -> bool {
    #[cfg(unix)]
    {
        if pid <= 0 {
            // 0 and negative pids name process groups, not a process.
            return false;
        }
        // SAFETY: signal 0 is not sent: kill only checks that the process
        // exists and may be signalled. No memory is passed.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Starts (never waits for) the write-out of `len` bytes of `file` from
/// `offset`, so a large report reaches the disk as it is written rather
/// than all at its final sync. Only a hint: a failure, or another target
/// than Linux, changes nothing but timing.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a descriptor of an open file this process owns, and no
        // memory passed; SYNC_FILE_RANGE_WRITE only starts the write-out of
        // dirty pages.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Turns `O_DIRECT` on or off for the file (every descriptor of it). An
/// error when the file system does not support it, and off Linux.
pub fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL on a descriptor of an open file this process
        // owns; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above; F_SETFL with the flags just read, only
        // O_DIRECT changed.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        Err(std::io::Error::other("direct I/O is used on Linux only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(pid_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
    }

    #[test]
    fn writeback_and_direct_io_change_no_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.write_all(&[5u8; 10_000]).unwrap();
        start_writeback(&file, 0, 10_000);
        start_writeback(&file, u64::MAX, u64::MAX);
        // Not every file system has O_DIRECT (tmpfs does not): when it is
        // refused, it is refused with an error, not ignored.
        if set_direct(&file, true).is_ok() {
            set_direct(&file, false).unwrap();
        }
        file.rewind().unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![5u8; 10_000]);
    }
}
