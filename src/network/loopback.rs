//! Bringing `lo` up in the calling thread's network namespace: a new namespace starts
//! with its loopback down, and pods expect 127.0.0.1 to work.

use nix::errno::Errno;
use nix::libc;

/// Sets IFF_UP on `lo` with the SIOCGIFFLAGS / SIOCSIFFLAGS ioctls. Only async-signal-safe
/// calls, so it may run in a freshly forked child.
pub fn bring_up_loopback() -> Result<(), Errno> {
    // SAFETY: a plain socket(2) call; the descriptor is closed below on every path.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value, and the name is
    // NUL-terminated because the array stays zero past "lo".
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: both ioctls read and write only `request`, which outlives the calls.
    let result = unsafe {
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) < 0 {
            -1
        } else {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(socket, libc::SIOCSIFFLAGS, &request)
        }
    };
    let error = Errno::last();
    // SAFETY: closing the descriptor this function opened.
    unsafe { libc::close(socket) };
    if result < 0 {
        Err(error)
    } else {
        Ok(())
    }
}
