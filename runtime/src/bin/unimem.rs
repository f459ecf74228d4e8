//! The `unimem` command: `unimem info` prints what this machine offers unimem.
//!
//! A thin argument parser over `unimem::info`; exit codes are documented there
//! (0 ready, 1 device failed, 3 no usable Vulkan device).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "unimem",
    version,
    about = "unimem: user-space heterogeneous memory management on Vulkan"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the CPU fault mechanisms and Vulkan devices this process can use, and run a
    /// compute smoke test on the device unimem would pick (exit 0 when ready, 3 when there
    /// is no usable Vulkan device, 1 when the device fails).
    Info,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            let info = unimem::info::Info::gather();
            print!("{}", info.render());
            std::process::exit(info.exit_code());
        }
    }
}
