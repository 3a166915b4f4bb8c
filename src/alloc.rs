//! The service's allocator and its settings, one macro for every binary that holds an index.

/// Installs jemalloc as the global allocator, with transparent huge pages for the memory it
/// maps.
///
/// glibc malloc was a third of a scrub's CPU time (millions of short strings per second);
/// jemalloc's thread caches cut that for the client and the service alike. At 10^8 contacts
/// the index's tables span gigabytes, and a check touches a few cache lines of it at random:
/// with 4 KiB pages nearly every check misses the TLB (a two-level walk under a hypervisor),
/// which cost more than the lookup itself. The kernel's THP mode is usually `madvise`, which
/// gives huge pages only to memory that asks: `thp:always` makes jemalloc ask
/// (`MADV_HUGEPAGE`) for every mapping it makes. A binary that would rather not can set
/// `_RJEM_MALLOC_CONF=thp:default` (the environment is read after this default).
#[macro_export]
macro_rules! service_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: ::tikv_jemallocator::Jemalloc = ::tikv_jemallocator::Jemalloc;

        // jemalloc reads `malloc_conf` (prefixed, as tikv-jemalloc-sys builds it) once,
        // at its first allocation.
        #[allow(non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static _rjem_malloc_conf: &[u8; 31] = b"thp:always,metadata_thp:always\0";
    };
}
