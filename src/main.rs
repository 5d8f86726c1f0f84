//! The `modelarts-proxy` binary: all of it lives in the library.
#![forbid(unsafe_code)]

/// jemalloc (feature `jemalloc`, on in what ships), with a background thread that returns freed memory to the
/// system within a second or two (configured in `.cargo/config.toml`);
/// glibc's malloc keeps a burst's request buffers in its arenas for good
/// (measured in BENCHMARKS.md, "Memory").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    modelarts_proxy::cli::main()
}
