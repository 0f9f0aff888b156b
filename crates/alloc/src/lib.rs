//! The global allocator of `tidemark` and `tidemark-server`: jemalloc, except that large zeroed
//! allocations are cleared with `memset` in memory jemalloc already holds.
//!
//! Why: the MongoDB driver reads every server reply into a zeroed buffer (`vec![0; len]`), about
//! 1 MiB per batch during a dump. When jemalloc hands out zeroed memory from an extent it had
//! already used, it gets the zeros by giving the pages back to the kernel (`MADV_DONTNEED`), so
//! every page of every reply faults back in: that was a third of the CPU time of `tidemark dump`.
//! jemalloc clears with `memset` only when it is configured for transparent huge pages
//! (`thp:always`), which also rounds every arena up to 2 MiB pages and made the client's peak
//! memory 1.5 times larger. So the allocator asks jemalloc for plain memory and clears it itself,
//! for sizes up to [`CLEARED_IN_PLACE`]. Larger zeroed allocations (rare, and possibly used
//! sparsely) still get the kernel's zero pages.
//!
//! Small sizes go to jemalloc's `calloc` as they are: jemalloc clears those in place already.
//!
//! [`keep_freed_pages_for`] shortens how long jemalloc keeps freed pages before giving them back to
//! the kernel (10 s by default). A restore frees about as much as it allocates, on other threads
//! than the ones that allocated it, so with the default about twice its live memory stayed
//! resident; the command line sets 1 s. The server keeps the default: its requests reuse large
//! buffers, and giving them back sooner only makes them fault in again.

use std::alloc::{GlobalAlloc, Layout};

use tikv_jemallocator::Jemalloc;

/// Zeroed allocations from 16 KiB (jemalloc's first size class past its small ones) up to this size are
/// cleared in place.
pub const CLEARED_IN_PLACE: usize = 64 << 20;

/// Sizes below this are small for jemalloc (served from slabs, which `calloc` clears with `memset`).
const SMALLEST_LARGE: usize = 16 << 10;

/// jemalloc, with large zeroed allocations cleared in place (see the crate documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

// SAFETY: every method forwards to jemalloc with the caller's arguments unchanged; `alloc_zeroed`
// additionally writes zeros over the `layout.size()` bytes of a block jemalloc just returned for
// that layout, which is what the contract of `alloc_zeroed` requires.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which is jemalloc's.
        unsafe { Jemalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if !(SMALLEST_LARGE..=CLEARED_IN_PLACE).contains(&size) {
            // SAFETY: as `alloc_zeroed`'s contract.
            return unsafe { Jemalloc.alloc_zeroed(layout) };
        }
        // SAFETY: as `alloc`'s contract.
        let block = unsafe { Jemalloc.alloc(layout) };
        if !block.is_null() {
            // SAFETY: `block` is a fresh allocation of `size` bytes.
            unsafe { block.write_bytes(0, size) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract; every block came from jemalloc.
        unsafe { Jemalloc.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract; every block came from jemalloc.
        unsafe { Jemalloc.realloc(block, layout, new_size) }
    }
}

/// Sets how long freed pages stay with the process before jemalloc gives them back to the kernel
/// (jemalloc's `dirty_decay_ms`): for the main thread's arena and as the default of the arenas
/// created later, one per thread that first allocates. Call it at the start of `main`, before other
/// threads allocate. Returns whether jemalloc took it.
pub fn keep_freed_pages_for(duration: std::time::Duration) -> bool {
    let Ok(millis) = isize::try_from(duration.as_millis()) else {
        return false;
    };
    [c"arenas.dirty_decay_ms", c"arena.0.dirty_decay_ms"]
        .iter()
        .all(|name| write_isize(name, millis))
}

/// Writes one `ssize_t` setting through `mallctl`.
#[allow(unsafe_code)]
fn write_isize(name: &std::ffi::CStr, value: isize) -> bool {
    let mut value = value;
    // SAFETY: `name` is NUL-terminated; `newp` points to an `isize` (jemalloc's `ssize_t`) that lives
    // through the call, with its exact size as `newlen`; no old value is asked for.
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&raw mut value).cast(),
            std::mem::size_of::<isize>(),
        )
    };
    status == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_blocks_of_every_kind_are_zero_after_reuse() {
        let allocator = Allocator;
        for size in [
            1,
            100,
            SMALLEST_LARGE - 1,
            SMALLEST_LARGE,
            1 << 20,
            (1 << 20) + 17,
            3 << 20,
        ] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            for _ in 0..3 {
                // Dirty a block, free it, and ask for a zeroed one of the same size: jemalloc
                // reuses the memory just freed.
                // SAFETY: non-zero sizes; each block is used within its size and freed once with its layout.
                #[allow(unsafe_code)]
                unsafe {
                    let dirty = allocator.alloc(layout);
                    assert!(!dirty.is_null());
                    dirty.write_bytes(0xA5, size);
                    allocator.dealloc(dirty, layout);
                    let zeroed = allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    let bytes = std::slice::from_raw_parts(zeroed, size);
                    assert!(bytes.iter().all(|b| *b == 0), "{size} bytes not zeroed");
                    allocator.dealloc(zeroed, layout);
                }
            }
        }
    }

    #[test]
    fn jemalloc_takes_the_decay_setting() {
        assert!(keep_freed_pages_for(std::time::Duration::from_secs(1)));
        assert!(keep_freed_pages_for(std::time::Duration::from_secs(10)));
        assert!(!write_isize(c"arenas.no_such_setting", 1));
    }

    #[test]
    fn vec_of_zeros_through_the_allocator() {
        // The driver's pattern: a zeroed buffer per reply, read into, dropped.
        #[global_allocator]
        static GLOBAL: Allocator = Allocator;
        for round in 0..4u8 {
            let mut reply = vec![0u8; (1 << 20) + usize::from(round)];
            assert!(reply.iter().all(|b| *b == 0));
            reply.fill(round.wrapping_add(1));
        }
    }
}
