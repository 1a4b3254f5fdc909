//! The `cryptomem` binary: `serve` runs the server; the other subcommands are a
//! small redis-cli-style client.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match cli::main(cli::Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cryptomem_util::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
