//! A model with two inputs, written as a struct (`model.rs`): does the query digit occur in the
//! memory? Trained with the same `fit` as a `Sequential`; the memories have 1 to 10 digits, and
//! every batch carries their lengths.
//!
//! ```text
//! cargo run --release --example query_memory
//! ```

mod model;

use backprop::prelude::*;
use model::{QueryMemory, lookup_data};

fn run() -> backprop::Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        return Err(backprop::Error::invalid(format!(
            "query_memory takes no arguments (its settings are fixed in the source), got {arg:?}"
        )));
    }
    let train = lookup_data(6000, 10, 1)?;
    let test = lookup_data(1000, 10, 2)?;
    let mut net = QueryMemory::new(8, 48, 3);
    let loss = CrossEntropyLoss::new();
    backprop::train::fit(
        &mut net,
        &train,
        &loss,
        &mut Adam::new(0.01),
        FitOptions::new().epochs(15).batch_size(32).seed(4).validation(&test),
    )?;
    let eval = backprop::train::evaluate(&mut net, &test, &loss, 256)?;
    println!(
        "test accuracy: {:.1}% ({}/{}), test loss {:.4}",
        100.0 * eval.accuracy.unwrap_or(0.0),
        eval.correct.unwrap_or(0),
        eval.total,
        eval.loss
    );
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
