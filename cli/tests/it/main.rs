//! The `mirage` binary's integration tests, one test binary: the commands (`cli`, `data_cli`,
//! `eval_cli`, `index_cli`, `input_cli`, `retrieval_cli`) and the HTTP service end to end
//! (`http`: the real `mirage serve` on 127.0.0.1:0, every response checked against the committed
//! OpenAPI document).
#![allow(unreachable_pub)]

mod cli;
mod common;
mod data_cli;
mod eval_cli;
mod http;
mod index_cli;
mod input_cli;
mod retrieval_cli;
