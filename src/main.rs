fn main() {
    std::process::exit(supervisor::main());
}
