//! Operating-system limits and resources: the open-file limit and accept backlog set
//! at start-up, and freed memory handed back after a spike.

use std::io;
use std::os::fd::AsRawFd;

/// Raises the soft open-file limit to the hard limit, so the connection count is bounded
/// by configuration rather than by the default 1024. Returns the limit now in force.
pub fn raise_open_files() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// Sets a listening socket's accept backlog (mio binds with 128), so a burst of
/// thousands of connects is queued instead of retried by the clients a second later.
pub fn set_backlog(listener: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen() on a valid, bound socket fd only changes its queue length.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hands memory freed by the allocator back to the system. glibc keeps freed heap
/// pages for reuse, so after thousands of connections leave, the RSS would stay at its
/// peak for the life of the process; elsewhere this does nothing.
pub fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_limit_is_at_least_the_default() {
        assert!(raise_open_files().unwrap() >= 1024);
    }

    #[test]
    fn backlog_can_be_raised_on_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_backlog(&listener, 4096).unwrap();
        assert!(set_backlog(&std::io::stdin(), 16).is_err(), "not a socket");
    }
}
