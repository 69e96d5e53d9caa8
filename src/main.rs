use clap::Parser;

fn main() {
    // Before anything opens a file: keep 0-2 open and park fd 3 for the
    // listening socket, so no log or lock file ever lands there.
    supervisor::listener::reserve_low_fds();
    let cli = supervisor::cli::Cli::parse();
    std::process::exit(supervisor::commands::main(cli));
}
