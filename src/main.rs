//! The `modelarts-proxy` binary: all of it lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    modelarts_proxy::cli::main()
}
