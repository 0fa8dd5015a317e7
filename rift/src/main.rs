//! `rift`: parse arguments, set up logging, run, map the outcome to an exit code.

use clap::Parser as _;

fn main() {
    let cli = rift::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rift: cannot start: {e}");
            std::process::exit(rift::EXIT_ERROR);
        }
    };
    let code = match runtime.block_on(rift::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rift: {e:#}");
            rift::EXIT_ERROR
        }
    };
    // Background tasks (webrtc drivers) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
