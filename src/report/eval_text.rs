//! `deepcnn eval`'s human-readable report.

use std::io::{self, Write};

use crate::train::EvalReport;

pub fn write_eval_report(r: &EvalReport, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "test loss {:.4}, test acc {:.4} ({} of {} images)", r.loss, r.accuracy, r.correct(), r.examples)?;
    writeln!(out, "\nper-class accuracy:")?;
    for c in &r.per_class {
        let accuracy = c.accuracy.map_or("  n/a".to_string(), |a| format!("{a:.3}"));
        writeln!(out, "  {:<12} {accuracy}  ({} images)", c.class, c.examples)?;
    }
    writeln!(out, "\nconfusion matrix (rows: true class, columns: predicted):")?;
    let classes = r.classes();
    let short: Vec<String> = classes.iter().map(|n| n.chars().take(7).collect()).collect();
    write!(out, "{:>12}", "")?;
    for s in &short {
        write!(out, " {s:>7}")?;
    }
    writeln!(out)?;
    for (name, row) in classes.iter().zip(&r.confusion) {
        write!(out, "{name:>12}")?;
        for v in row {
            write!(out, " {v:>7}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
