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
    /// The names of its attributes (`ecs.capability.privileged-container`, …).
    pub attributes: std::collections::BTreeSet<String>,
}

/// What a task needs of an instance.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// CPU units.
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
    /// Attributes the instance must have (ECS's requiresAttributes).
    pub attributes: Vec<String>,
}

/// Places a task: among the candidates with every required attribute, the fitting one with the
/// most free memory (spreading tasks), whose remaining resources are then reduced. Otherwise
/// one `(instance ARN, "ATTRIBUTE" | "RESOURCE:CPU" | "RESOURCE:MEMORY")` per candidate, as ECS
/// reports.
pub fn place(
    candidates: &mut [Candidate],
    needs: &Needs,
) -> Result<usize, Vec<(String, &'static str)>> {
    let (cpu, memory) = (needs.cpu, needs.memory);
    let has_attributes = |c: &Candidate| needs.attributes.iter().all(|a| c.attributes.contains(a));
    let best = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| has_attributes(c) && c.cpu >= cpu && c.memory >= memory)
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
                let reason = if !has_attributes(c) {
                    "ATTRIBUTE"
                } else if c.cpu < cpu {
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
            attributes: Default::default(),
        }
    }

    fn needs(cpu: i64, memory: i64) -> Needs {
        Needs {
            cpu,
            memory,
            attributes: Vec::new(),
        }
    }

    #[test]
    fn spreads_by_free_memory_and_reserves() {
        let mut c = vec![cand("a", 2048, 1000), cand("b", 2048, 3000)];
        assert_eq!(place(&mut c, &needs(256, 512)), Ok(1));
        assert_eq!(c[1].memory, 2488);
        assert_eq!(c[1].cpu, 1792);
    }

    #[test]
    fn reports_the_missing_resource_per_instance() {
        let mut c = vec![cand("a", 100, 5000), cand("b", 4096, 100)];
        let err = place(&mut c, &needs(512, 512)).unwrap_err();
        assert_eq!(
            err,
            vec![
                ("a".to_string(), "RESOURCE:CPU"),
                ("b".to_string(), "RESOURCE:MEMORY")
            ]
        );
    }

    #[test]
    fn a_required_attribute_limits_the_candidates() {
        let mut privileged = cand("p", 1024, 100);
        privileged
            .attributes
            .insert("ecs.capability.privileged-container".into());
        let mut c = vec![cand("a", 4096, 5000), privileged];
        let mut n = needs(256, 50);
        n.attributes = vec!["ecs.capability.privileged-container".into()];
        assert_eq!(
            place(&mut c, &n),
            Ok(1),
            "not the roomier instance without it"
        );
        n.memory = 500;
        assert_eq!(
            place(&mut c, &n).unwrap_err(),
            vec![
                ("a".to_string(), "ATTRIBUTE"),
                ("p".to_string(), "RESOURCE:MEMORY")
            ]
        );
    }
}
