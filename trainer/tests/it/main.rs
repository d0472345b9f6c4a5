//! The trainer's integration tests, one test binary: the METHOD.md oracles, loss parity with
//! PyTorch, and CPU training end to end.

mod common;
mod e2e;
mod loss_parity;
mod oracles;
