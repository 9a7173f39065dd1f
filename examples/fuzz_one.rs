fn main() {
    let t = std::env::args().nth(1).unwrap();
    let f = dmastub::fuzzing::TARGETS.iter().find(|(n, _)| *n == t).unwrap().1;
    for p in std::env::args().skip(2) {
        eprintln!("{p}");
        f(&std::fs::read(&p).unwrap());
    }
}
