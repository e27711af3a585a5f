//! Transparent huge pages off for this process: with the kernel's THP set to `always`,
//! every page mimalloc hands back (purges) and touches again is refaulted as a fresh 2 MiB
//! page the kernel zeroes whole, for the few kilobytes mimalloc wanted. Under span load
//! that zeroing (`clear_page_erms`) was a fifth of `obs up`'s CPU samples and the trace
//! processor's in-process benchmark spent 2× the CPU; with 4 KiB pages only what is
//! touched is zeroed. `MIMALLOC_ALLOW_THP` (mimalloc's own switch, read before `main`)
//! still decides when it is set: `MIMALLOC_ALLOW_THP=1` keeps huge pages.

/// mimalloc's environment variable for the same choice.
const MIMALLOC_SWITCH: &str = "MIMALLOC_ALLOW_THP";

/// Whether to turn huge pages off, given `MIMALLOC_ALLOW_THP`'s value: only when it is unset
/// (when set, mimalloc already did what it says at start).
fn wanted(switch: Option<&str>) -> bool {
    switch.is_none()
}

/// Turns transparent huge pages off for the whole process (every thread, memory mapped
/// before and after) unless `MIMALLOC_ALLOW_THP` is set; whether they are off now.
pub fn disable_unless_asked() -> bool {
    if !wanted(std::env::var(MIMALLOC_SWITCH).ok().as_deref()) {
        return false;
    }
    disable()
}

#[cfg(target_os = "linux")]
fn disable() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn disable() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unset_mimalloc_switch_turns_huge_pages_off() {
        assert!(wanted(None));
        assert!(!wanted(Some("1")));
        assert!(!wanted(Some("0")));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_reports_huge_pages_off_for_the_process() {
        assert!(disable());
        // SAFETY: as in `disable`.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status.lines().any(|l| l == "THP_enabled:\t0"),
            "/proc/self/status has no THP_enabled: 0:\n{status}"
        );
    }
}
