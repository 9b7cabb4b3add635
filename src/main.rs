// A general-purpose allocator that is markedly faster than glibc's under
// many small, short-lived allocations (a request is made of them): malloc
// and free were a fifth of the CPU profile of the HTTP path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    erlmcp::cli::main()
}
