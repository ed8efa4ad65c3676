//! How the `residency` and `residency-bench` processes run a command: log lines on stderr
//! in the chosen format, one multi-thread runtime, and the error chain printed with a
//! failing exit code.

use std::process::ExitCode;

/// The flags every command of both binaries takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessFlags {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RESIDENCY_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging as `flags` say, runs `command` to its end on a new multi-thread
/// runtime, and turns its result into the process's exit code.
pub fn run(flags: &ProcessFlags, command: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    telemetry::init_tracing(match flags.log_format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
