//! The simulator's seeded PRNG: the runtime's SplitMix64, so a scenario with a seed replays
//! the same world.

pub use agent_runtime::rng::Rng;
