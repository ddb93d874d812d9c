//! Placement: which container instance a new task goes to. Pure functions over a snapshot of the
//! instances' remaining resources, so they are unit-tested without a controller.

/// An instance that could take a task.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The container instance ARN.
    pub arn: String,
    /// CPU units not yet reserved.
    pub cpu: i64,
    /// MiB not yet reserved.
    pub memory: i64,
}

/// Places a task needing `cpu` units and `memory` MiB: the fitting candidate with the most free
/// memory (spreading tasks), whose remaining resources are then reduced. Otherwise one
/// `(instance ARN, "RESOURCE:CPU" | "RESOURCE:MEMORY")` per candidate, as ECS reports.
pub fn place(
    candidates: &mut [Candidate],
    cpu: i64,
    memory: i64,
) -> Result<usize, Vec<(String, &'static str)>> {
    let best = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.cpu >= cpu && c.memory >= memory)
        .max_by_key(|(i, c)| (c.memory, std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    match best {
        Some(i) => {
            candidates[i].cpu -= cpu;
            candidates[i].memory -= memory;
            Ok(i)
        }
        None => Err(candidates
            .iter()
            .map(|c| {
                let reason = if c.cpu < cpu {
                    "RESOURCE:CPU"
                } else {
                    "RESOURCE:MEMORY"
                };
                (c.arn.clone(), reason)
            })
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(arn: &str, cpu: i64, memory: i64) -> Candidate {
        Candidate {
            arn: arn.into(),
            cpu,
            memory,
        }
    }

    #[test]
    fn spreads_by_free_memory_and_reserves() {
        let mut c = vec![cand("a", 2048, 1000), cand("b", 2048, 3000)];
        assert_eq!(place(&mut c, 256, 512), Ok(1));
        assert_eq!(c[1].memory, 2488);
        assert_eq!(c[1].cpu, 1792);
    }

    #[test]
    fn reports_the_missing_resource_per_instance() {
        let mut c = vec![cand("a", 100, 5000), cand("b", 4096, 100)];
        let err = place(&mut c, 512, 512).unwrap_err();
        assert_eq!(
            err,
            vec![
                ("a".to_string(), "RESOURCE:CPU"),
                ("b".to_string(), "RESOURCE:MEMORY")
            ]
        );
    }
}
