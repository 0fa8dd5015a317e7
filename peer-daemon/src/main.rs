//! `keksbox-peer`: placeholder until the daemon's main loop lands (issue 8, media half).

fn main() {
    eprintln!("keksbox-peer: not yet implemented");
    std::process::exit(2);
}
