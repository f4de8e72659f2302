//! Large arrays that searches read at random: backed by 2 MiB pages where the kernel allows it
//! (`madvise` mode of transparent huge pages), so a walk over them does not miss the TLB on
//! nearly every step.

/// Reserves room for `additional` more elements of `v` and asks for huge pages for its
/// buffer. Only a hint: without huge pages the buffer is an ordinary one.
pub(crate) fn reserve_huge<T>(v: &mut Vec<T>, additional: usize) {
    v.reserve_exact(additional);
    advise(v.as_ptr().cast(), v.capacity() * std::mem::size_of::<T>());
}

#[cfg(target_os = "linux")]
fn advise(start: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let first = (start as usize).next_multiple_of(HUGE);
    let end = (start as usize + len) / HUGE * HUGE;
    if end > first {
        // Safety: the range lies inside one live allocation; MADV_HUGEPAGE changes only how
        // the kernel backs it, never its contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_start: *const u8, _len: usize) {}
