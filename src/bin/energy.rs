//! The `energy` command: parse, set up logging, run, map the error to an exit code.
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // SAFETY: first thing in `main`: no other thread of ours exists yet, and MLX reads its
    // environment only when it evaluates.
    unsafe { energy::model::streams::widen_scheduling() };
    let cli = match energy::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 1 } else { 0 });
        }
    };
    // OpenBLAS's threads spin for their first 100 ms; they restart when a matmul needs them
    energy::model::blas::park_idle_threads();
    energy::commands::init_tracing(cli.verbose, cli.quiet);
    match energy::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(energy::commands::exit_code(&error))
        }
    }
}
