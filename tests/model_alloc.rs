//! Proves `Scorer::score` and `top_factors` (with a reused buffer) never allocate, using a
//! counting global allocator (own test binary, so it counts nothing else).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fengkong::model::{train, Algo, TrainParams};
use model_support::{names, synthetic};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn scoring_does_not_allocate() {
    const COLS: usize = 20;
    let (x, y) = synthetic(8_000, COLS, 7);
    let rows: Vec<Vec<f64>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
    for algo in Algo::ALL {
        let p = TrainParams {
            algo: Some(algo),
            trees: 20,
            threads: 1,
            ..TrainParams::default()
        };
        let a = train(&x, &y, &names(COLS), &p, &mut |_| {}).unwrap();
        let s = a.scorer();
        let mut c = vec![0.0; COLS];
        let mut top = Vec::with_capacity(5);
        let mut sum = 0.0;
        let before = ALLOCS.load(Ordering::SeqCst);
        for r in &rows {
            sum += s.score(r, &mut c);
            s.top_factors(&c, 5, &mut top);
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(after - before, 0, "{algo:?} allocated while scoring");
        assert!(sum.is_finite() && sum > 0.0);
    }
}
