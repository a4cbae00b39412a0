//! The `prescale` command line.

mod bench_grpc;
mod cli;
mod demo;

fn main() -> std::process::ExitCode {
    cli::main()
}
