//! The `preflight` command line: `serve` runs the service; the other subcommands are gRPC clients.
mod cli;

use anyhow::Result;

preflight::service_allocator!();
use clap::Parser;

fn main() -> Result<()> {
    let args = cli::Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Default: one worker per core. Fewer leave cores to a co-located load generator,
    // dialer or Redis.
    if let Some(n) = std::env::var("PREFLIGHT_WORKER_THREADS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let n: usize = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            anyhow::anyhow!("PREFLIGHT_WORKER_THREADS=`{n}` is not a positive number")
        })?;
        builder.worker_threads(n);
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(cli::run(args))
}
