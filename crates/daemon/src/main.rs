//! The `unisync` command: everything is in the library.

fn main() -> std::process::ExitCode {
    unisync::main()
}
