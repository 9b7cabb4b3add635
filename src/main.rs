fn main() -> std::process::ExitCode {
    erlmcp::cli::main()
}
