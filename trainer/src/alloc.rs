//! A global allocator for the trainer that keeps large freed blocks for
//! reuse.
//!
//! candle allocates a fresh buffer for every tensor op, and a training step
//! of a backbone makes thousands of activation-sized buffers (tens of MB
//! each), freeing them again in the same order the next step. The system
//! allocator hands such sizes to the kernel and back (mmap/munmap), so every
//! op paid for page faults and the kernel zeroing each page: measured with
//! `perf` on `finetune-bench`, 43 % of a step was `clear_page_erms`. Blocks
//! of at least [`MIN_CACHED`] bytes are kept here on free (up to
//! [`MAX_CACHED_BYTES`] in [`SLOTS`] blocks) and handed out again for a
//! request of the same rounded size and alignment. Smaller blocks go straight
//! to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smallest block kept for reuse.
pub const MIN_CACHED: usize = 1 << 20;
/// Most bytes kept in free blocks; a block freed beyond it goes back to the
/// system.
pub const MAX_CACHED_BYTES: usize = 6 << 30;
/// Most free blocks kept.
pub const SLOTS: usize = 1024;
/// Sizes are rounded up to this granule so near-equal requests share blocks.
const GRANULE: usize = 64 << 10;

/// A free block: rounded size, alignment, address.
#[derive(Clone, Copy)]
struct Block {
    size: usize,
    align: usize,
    addr: usize,
}

struct Cache {
    blocks: [Block; SLOTS],
    len: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: [Block {
        size: 0,
        align: 0,
        addr: 0,
    }; SLOTS],
    len: 0,
    bytes: 0,
});

/// Large requests served from the cache, and from the system.
static HITS: AtomicUsize = AtomicUsize::new(0);
static MISSES: AtomicUsize = AtomicUsize::new(0);

/// Large requests served from freed blocks and from the system so far.
pub fn stats() -> (usize, usize) {
    (HITS.load(Ordering::Relaxed), MISSES.load(Ordering::Relaxed))
}

/// The trainer's global allocator (see the module docs).
pub struct ReusingAllocator;

fn rounded(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_next_multiple_of(GRANULE)?;
    Layout::from_size_align(size, layout.align()).ok()
}

impl ReusingAllocator {
    /// A cached block for `layout` (already rounded), if one is free.
    fn take(layout: Layout) -> Option<*mut u8> {
        let mut c = CACHE.lock().ok()?;
        let i = c.blocks[..c.len]
            .iter()
            .position(|b| b.size == layout.size() && b.align == layout.align())?;
        let b = c.blocks[i];
        HITS.fetch_add(1, Ordering::Relaxed);
        let last = c.len - 1;
        c.blocks[i] = c.blocks[last];
        c.len = last;
        c.bytes -= b.size;
        Some(b.addr as *mut u8)
    }

    /// Keeps a freed block (already rounded) if there is room.
    fn keep(ptr: *mut u8, layout: Layout) -> bool {
        let Ok(mut c) = CACHE.lock() else {
            return false;
        };
        if c.len == SLOTS || c.bytes + layout.size() > MAX_CACHED_BYTES {
            return false;
        }
        let n = c.len;
        c.blocks[n] = Block {
            size: layout.size(),
            align: layout.align(),
            addr: ptr as usize,
        };
        c.len += 1;
        c.bytes += layout.size();
        true
    }
}

// SAFETY: every block handed out is either fresh from `System` with the
// rounded layout, or a block of exactly that rounded layout that was
// allocated by `System` and freed to the cache; blocks go back to `System`
// with the rounded layout they were allocated with.
unsafe impl GlobalAlloc for ReusingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_CACHED {
            return System.alloc(layout);
        }
        let Some(r) = rounded(layout) else {
            return std::ptr::null_mut();
        };
        Self::take(r).unwrap_or_else(|| {
            MISSES.fetch_add(1, Ordering::Relaxed);
            System.alloc(r)
        })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_CACHED {
            return System.alloc_zeroed(layout);
        }
        let Some(r) = rounded(layout) else {
            return std::ptr::null_mut();
        };
        match Self::take(r) {
            Some(p) => {
                std::ptr::write_bytes(p, 0, layout.size());
                p
            }
            None => {
                MISSES.fetch_add(1, Ordering::Relaxed);
                System.alloc_zeroed(r)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < MIN_CACHED && new_size < MIN_CACHED {
            // Small on both sides: the system allocator may grow in place.
            return System.realloc(ptr, layout, new_size);
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < MIN_CACHED {
            return System.dealloc(ptr, layout);
        }
        // `alloc` succeeded with this layout, so rounding cannot fail here.
        let Some(r) = rounded(layout) else {
            return;
        };
        if !Self::keep(ptr, r) {
            System.dealloc(ptr, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_reused_and_small_ones_pass_through() {
        let a = ReusingAllocator;
        let big = Layout::from_size_align(MIN_CACHED + 123, 64).unwrap();
        let small = Layout::from_size_align(4096, 8).unwrap();
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, big.size());
            a.dealloc(p, big);
            // Same rounded size and alignment: the same block, zeroed on request.
            let q = a.alloc_zeroed(Layout::from_size_align(MIN_CACHED + 200, 64).unwrap());
            assert_eq!(p, q);
            assert!(std::slice::from_raw_parts(q, MIN_CACHED + 200)
                .iter()
                .all(|&b| b == 0));
            // Another alignment is not served from that block.
            a.dealloc(q, big);
            let r = a.alloc(Layout::from_size_align(MIN_CACHED + 123, 4096).unwrap());
            assert_ne!(r, q);
            assert_eq!(r as usize % 4096, 0);
            a.dealloc(r, Layout::from_size_align(MIN_CACHED + 123, 4096).unwrap());
            let s = a.alloc(small);
            assert!(!s.is_null());
            // Growing a block keeps its bytes, across the size limit too.
            std::ptr::write_bytes(s, 5, small.size());
            let grown = a.realloc(s, small, MIN_CACHED * 2);
            assert!(std::slice::from_raw_parts(grown, small.size())
                .iter()
                .all(|&b| b == 5));
            a.dealloc(grown, Layout::from_size_align(MIN_CACHED * 2, 8).unwrap());
        }
    }
}
