//! A cache prefetch hint, for the look-ahead of batch checks over tables too large to stay
//! in cache (registry sets, the NANP block tables).

/// Asks the CPU to start loading the cache line holding `r`; no effect on results.
#[inline(always)]
pub fn hint<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it neither reads nor writes memory as far as the program
    // can observe, and the pointer comes from a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
