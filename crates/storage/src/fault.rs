//! A fault-injecting layer, to test that retries hide an unreliable store and that persistent faults end in
//! clean errors.
//!
//! [`FaultInjecting`] is an opendal [`Layer`] that
//! [`Storage::open_with_faults`](crate::Storage::open_with_faults) places directly above the backend, below
//! the timeout and retry layers — where a flaky network or server would be. On each call that reaches the
//! store (metadata lookup, read, each written chunk and the final commit of a write, each entry of a listing,
//! each deletion) it draws a random number and, for the chosen fraction of calls, injects its fault *before*
//! the call reaches the backend (so a retried call is a clean new attempt):
//!
//! - [`Fault::Transient`]: the call fails with a temporary error, as a 503 or a reset connection would;
//! - [`Fault::Hang`]: the call stalls for the given time, so a shorter configured timeout expires;
//! - [`Fault::FlipBit`]: a chunk of data returned by a read gets one bit flipped (a small object is one
//!   chunk; other calls are unaffected), as a corrupting disk or network would — the store cannot notice;
//!   checksums in the repository format must.
//!
//! The generator is seeded, so a sequential test run is reproducible, and [`FaultInjecting::injected`]
//! reports how many faults were injected, so a test can show that its faults really happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opendal::raw::{Layer, Servicer};
use opendal::{Buffer, Error, ErrorKind, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::hook::{Hook, HookService};

/// The kind of fault to inject.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Fail the call with a temporary (retryable) error.
    Transient,
    /// Stall the call for this long before letting it proceed.
    Hang(Duration),
    /// Flip one bit of a chunk of data returned by a read.
    FlipBit,
}

/// Fault injection for tests: see the [module documentation](self). Cloning shares the generator and the
/// counter.
#[derive(Debug, Clone)]
pub struct FaultInjecting {
    fault: Fault,
    ratio: f64,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    rng: Mutex<StdRng>,
    injected: AtomicU64,
}

impl FaultInjecting {
    /// Injects `fault` into the fraction `ratio` (0.0 to 1.0, clamped; NaN counts as 0) of calls.
    pub fn new(fault: Fault, ratio: f64) -> FaultInjecting {
        let ratio = if ratio.is_nan() { 0.0 } else { ratio.clamp(0.0, 1.0) };
        FaultInjecting {
            fault,
            ratio,
            state: Arc::new(State {
                rng: Mutex::new(StdRng::seed_from_u64(0x7164_6d6b)),
                injected: AtomicU64::new(0),
            }),
        }
    }

    /// Fails the fraction `ratio` of calls with a transient error.
    pub fn transient(ratio: f64) -> FaultInjecting {
        FaultInjecting::new(Fault::Transient, ratio)
    }

    /// Stalls the fraction `ratio` of calls for `duration`.
    pub fn hang(ratio: f64, duration: Duration) -> FaultInjecting {
        FaultInjecting::new(Fault::Hang(duration), ratio)
    }

    /// Flips one bit in the fraction `ratio` of the chunks of data returned by reads.
    pub fn flip_bit(ratio: f64) -> FaultInjecting {
        FaultInjecting::new(Fault::FlipBit, ratio)
    }

    /// Reseeds the generator (runs with the same seed and the same calls inject the same faults).
    pub fn with_seed(self, seed: u64) -> FaultInjecting {
        if let Ok(mut rng) = self.state.rng.lock() {
            *rng = StdRng::seed_from_u64(seed);
        }
        self
    }

    /// How many faults have been injected so far.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Draws whether this call gets the fault; counts it if so.
    fn hit(&self) -> bool {
        let draw: f64 = match self.state.rng.lock() {
            Ok(mut rng) => rng.random(),
            Err(poisoned) => poisoned.into_inner().random(),
        };
        let hit = draw < self.ratio;
        if hit {
            self.state.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}

impl Hook for FaultInjecting {
    async fn before(&self, what: &'static str) -> Result<()> {
        match self.fault {
            Fault::FlipBit => Ok(()),
            Fault::Transient => {
                if self.hit() {
                    Err(
                        Error::new(ErrorKind::Unexpected, format!("injected transient fault in {what}"))
                            .set_temporary(),
                    )
                } else {
                    Ok(())
                }
            }
            Fault::Hang(duration) => {
                if self.hit() {
                    tokio::time::sleep(duration).await;
                }
                Ok(())
            }
        }
    }

    fn after_read(&self, buf: Buffer) -> Buffer {
        if self.fault != Fault::FlipBit || buf.is_empty() || !self.hit() {
            return buf;
        }
        let mut bytes = buf.to_vec();
        let bit = match self.state.rng.lock() {
            Ok(mut rng) => rng.random_range(0..bytes.len().saturating_mul(8)),
            Err(poisoned) => poisoned.into_inner().random_range(0..bytes.len().saturating_mul(8)),
        };
        if let Some(byte) = bytes.get_mut(bit / 8) {
            *byte ^= 1 << (bit % 8);
        }
        Buffer::from(bytes)
    }
}

impl Layer for FaultInjecting {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        Arc::new(HookService::new(inner, self.clone()))
    }
}
