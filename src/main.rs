//! The `prescale` command line.

mod bench_grpc;
mod bench_retrain;
mod cli;
mod demo;

fn main() -> std::process::ExitCode {
    cli::main()
}
