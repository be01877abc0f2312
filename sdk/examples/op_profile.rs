//! Per-operator time of one ONNX model under tract (a profiling aid).
//!
//! `cargo run --release -p fakewatch-sdk --example op_profile -- MODEL.onnx N,C,H,W [runs]`
//!
//! Prints `plan.run` against a reused state, then the 25 slowest operators.
//! With `VIA_TYPED=1` the plan is made from the symbolic typed model with the
//! input fact set afterwards, which is what `TractModel` used to do (FaceNet
//! at batch 1: 124 ms that way, 63 ms planned from the parsed file).
// A developer's profiling aid: a bad argument ends it with its message.
#![allow(clippy::expect_used)]
use std::collections::HashMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("model path");
    let shape: Vec<usize> = args
        .get(2)
        .expect("shape")
        .split(',')
        .map(|s| s.parse().expect("dim"))
        .collect();
    let runs: usize = args.get(3).map_or(5, |s| s.parse().expect("runs"));
    let m = tract_onnx::onnx().model_for_path(path)?;
    let plan = if std::env::var_os("VIA_TYPED").is_some() {
        let mut t = m.into_typed()?.into_decluttered()?;
        t.set_input_fact(0, f32::fact(&shape))?;
        t.into_optimized()?.into_runnable()?
    } else {
        let mut m = m;
        m.set_input_fact(0, f32::fact(&shape).into())?;
        m.into_optimized()?.into_runnable()?
    };
    let input: Tensor = tract_ndarray::ArrayD::<f32>::from_elem(shape.clone(), 0.1).into();
    state_reuse(&plan, &input, runs)?;
    let mut per: HashMap<String, Duration> = HashMap::new();
    let mut total = Duration::ZERO;
    for r in 0..=runs {
        let mut state = SimpleState::new(&plan)?;
        let t = Instant::now();
        state.run_plan_with_eval(tvec!(input.clone().into_tvalue()), |ctx, st, node, inp| {
            let t0 = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, st, node, inp);
            if r > 0 {
                *per.entry(format!("{} {}", node.op().name(), node.name))
                    .or_default() += t0.elapsed();
            }
            out
        })?;
        if r > 0 {
            total += t.elapsed();
        }
    }
    let mut v: Vec<_> = per.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    println!(
        "total {:.2} ms/run",
        total.as_secs_f64() * 1e3 / runs as f64
    );
    for (k, d) in v.iter().take(25) {
        println!("{:9.3} ms  {k}", d.as_secs_f64() * 1e3 / runs as f64);
    }
    Ok(())
}

/// `plan.run` (a fresh state per call) against one reused state.
#[allow(dead_code)]
fn state_reuse(
    plan: &std::sync::Arc<TypedRunnableModel>,
    input: &Tensor,
    runs: usize,
) -> TractResult<()> {
    let t = Instant::now();
    for _ in 0..runs {
        plan.run(tvec!(input.clone().into_tvalue()))?;
    }
    let fresh = t.elapsed();
    let mut state = SimpleState::new(plan)?;
    let t = Instant::now();
    for _ in 0..runs {
        state.run(tvec!(input.clone().into_tvalue()))?;
    }
    let reused = t.elapsed();
    println!(
        "plan.run {:.3} ms, reused state {:.3} ms",
        fresh.as_secs_f64() * 1e3 / runs as f64,
        reused.as_secs_f64() * 1e3 / runs as f64
    );
    Ok(())
}
