use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: cnctl::Cli = agent_runtime::config::parse_args();
    cnctl::main(cli)
}
