//! Splitting one frame's work (pyramid levels, crops, faces) across threads.
//!
//! tract runs a model on one core, and on the two-core devices fakewatch
//! targets its plans are fastest at batch 1 (measured: FaceNet 94 ms for one
//! face, 250 ms for a batch of two). So the detector and the embedder cut
//! their work into independent items and hand them to scoped threads; with
//! one thread everything runs inline, in order.

use crate::error::Result;

/// The default number of worker threads: the cores this process may use.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads one call may use (more would not help a frame's work).
pub const MAX_THREADS: usize = 16;

/// Assigns `costs.len()` items to at most `workers` bins, greedily (largest
/// item first into the least loaded bin). Returns the item indices per bin,
/// each bin in ascending order; empty bins are dropped.
pub fn partition(costs: &[f64], workers: usize) -> Vec<Vec<usize>> {
    let workers = workers.clamp(1, MAX_THREADS).min(costs.len().max(1));
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]));
    let mut bins: Vec<(f64, Vec<usize>)> = vec![(0.0, Vec::new()); workers];
    for i in order {
        if let Some(bin) = bins.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
            bin.0 += costs[i].max(0.0);
            bin.1.push(i);
        }
    }
    bins.into_iter()
        .filter(|b| !b.1.is_empty())
        .map(|(_, mut v)| {
            v.sort_unstable();
            v
        })
        .collect()
}

/// Runs `f` on every item, spread over `workers` threads by `cost`, and
/// returns the results in item order. The first error wins; a panicking
/// worker is reported as an error, never propagated.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    cost: impl Fn(&T) -> f64,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    if workers <= 1 || items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let costs: Vec<f64> = items.iter().map(cost).collect();
    let bins = partition(&costs, workers);
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let f = &f;
    let results: Vec<Result<Vec<(usize, R)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = bins
            .iter()
            .skip(1)
            .map(|bin| {
                s.spawn(move || {
                    bin.iter()
                        .map(|&i| f(&items[i]).map(|r| (i, r)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        // The calling thread takes the first bin itself.
        let own = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bins.first().map_or_else(
                || Ok(Vec::new()),
                |bin| {
                    bin.iter()
                        .map(|&i| f(&items[i]).map(|r| (i, r)))
                        .collect::<Result<Vec<_>>>()
                },
            )
        }));
        let mut all =
            vec![own.unwrap_or_else(|_| {
                Err(crate::Error::model("worker", "a worker thread panicked"))
            })];
        for h in handles {
            all.push(h.join().unwrap_or_else(|_| {
                Err(crate::Error::model("worker", "a worker thread panicked"))
            }));
        }
        all
    });
    for r in results {
        for (i, v) in r? {
            slots[i] = Some(v);
        }
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| crate::Error::model("worker", "an item was not processed")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_balances_and_keeps_every_item() {
        // Pyramid-like costs: each level half the previous.
        let costs = [64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0];
        let bins = partition(&costs, 2);
        assert_eq!(bins.len(), 2);
        let mut all: Vec<usize> = bins.concat();
        all.sort_unstable();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        let load = |b: &Vec<usize>| b.iter().map(|&i| costs[i]).sum::<f64>();
        assert_eq!(load(&bins[0]), 64.0);
        assert_eq!(load(&bins[1]), 63.0);
        assert!(partition(&[], 4).is_empty());
        assert_eq!(partition(&[1.0, 1.0], 8).len(), 2);
    }

    #[test]
    fn map_keeps_order_and_reports_errors() {
        let items: Vec<u32> = (0..37).collect();
        for workers in [1, 2, 3, 8] {
            let out = map(&items, workers, |&i| f64::from(i % 5), |&i| Ok(i * 2)).unwrap();
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
        let err = map(
            &items,
            2,
            |_| 1.0,
            |&i| {
                if i == 30 {
                    Err(crate::Error::frame("bad item"))
                } else {
                    Ok(i)
                }
            },
        );
        assert!(err.unwrap_err().to_string().contains("bad item"));
    }

    #[test]
    fn map_turns_a_worker_panic_into_an_error() {
        let items: Vec<u32> = (0..4).collect();
        let r = map(
            &items,
            2,
            |_| 1.0,
            |&i| {
                if i == 3 {
                    panic!("boom");
                }
                Ok(i)
            },
        );
        assert!(r.unwrap_err().to_string().contains("panicked"));
        // The same on the calling thread's own bin (item 0).
        let r = map(
            &items,
            2,
            |_| 1.0,
            |&i| {
                if i == 0 {
                    panic!("boom");
                }
                Ok(i)
            },
        );
        assert!(r.unwrap_err().to_string().contains("panicked"));
    }
}
