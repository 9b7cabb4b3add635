fn main() {
    println!("erlmcp: under construction");
}
