//! The `prescale` command line.

mod bench_grpc;
mod bench_retrain;
mod bench_soak;
mod cli;
mod demo;
mod output;
mod runtime;

fn main() -> std::process::ExitCode {
    cli::main()
}
