//! Runs the export benchmark: `cargo run --release -p export --example bench_export [ROWS]`
//! prints the figures as a table, then as JSON.

fn main() {
    let rows = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let report = export::bench_export(rows);
    print!("{}", report.render());
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("encode the report: {e}"),
    }
}
