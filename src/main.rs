//! The `preflight` command line: `serve` runs the service; the other subcommands are gRPC clients.
mod cli;

use anyhow::Result;

// glibc malloc was a third of a scrub's CPU time (millions of short strings per second);
// jemalloc's thread caches cut that for the client and the service alike.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use clap::Parser;

fn main() -> Result<()> {
    let args = cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(cli::run(args))
}
