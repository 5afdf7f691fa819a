//! The `berth` binary: everything lives in `berth-cli`.

fn main() -> std::process::ExitCode {
    berth_cli::main()
}
