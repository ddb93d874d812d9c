//! Placement: which container instance a new task goes to. Pure functions over a snapshot of
//! the candidate instances, so they are unit-tested without a controller (and reused by the
//! services scheduler).
//!
//! ECS's order: an instance must have every required attribute (requiresAttributes,
//! runtimePlatform), the CPU and memory the task reserves, and satisfy every placement
//! constraint (memberOf, distinctInstance); the strategies then rank what is left, in the order
//! given (binpack, spread, random), each breaking the previous one's ties. Without a strategy
//! Berth ranks by most free memory (spreading load), then by the candidates' order.

use crate::query::{self, Expr, Target};
use berth_proto::v1::{PlacementConstraint, PlacementStrategy};
use rand::Rng;
use std::collections::BTreeSet;

/// At most this many strategies per task (ECS).
pub const MAX_STRATEGIES: usize = 5;
/// At most this many constraints per task, the task definition's included (ECS).
pub const MAX_CONSTRAINTS: usize = 10;

/// A placement request that is malformed; names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlacementError(pub String);

/// An instance that could take a task.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The container instance ARN.
    pub arn: String,
    /// CPU units not yet reserved.
    pub cpu: i64,
    /// MiB not yet reserved.
    pub memory: i64,
    /// What the query language sees of it: attributes with values, tasks, task groups.
    pub target: Target,
    /// Tasks on it whose desired status is not STOPPED (distinctInstance looks at these).
    pub active_tasks: i64,
    /// Host ports in use, (protocol, port): reserved ones (PORTS, PORTS_UDP), its tasks'
    /// static ports and the ports their agents reported.
    pub ports_in_use: BTreeSet<(String, i32)>,
}

/// A placement constraint, parsed.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// Each active task on a different instance.
    DistinctInstance,
    /// Only instances the expression matches.
    MemberOf(Box<Expr>),
}

/// What binpack packs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinpackField {
    /// CPU units.
    Cpu,
    /// Memory.
    Memory,
}

/// What spread spreads over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadField {
    /// Each instance (`instanceId` or `host`).
    InstanceId,
    /// The values of an attribute (`attribute:NAME`).
    Attribute(String),
}

/// A placement strategy, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// The instance with the least of the field left that still fits.
    Binpack(BinpackField),
    /// The instance (or attribute value) with the fewest tasks of the group.
    Spread(SpreadField),
    /// Any.
    Random,
}

/// What a task needs of an instance.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// CPU units.
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
    /// Attributes the instance must have (ECS's requiresAttributes, runtimePlatform): a name,
    /// and the value it must have when one is given.
    pub attributes: Vec<(String, Option<String>)>,
    /// Constraints, the task definition's and the request's.
    pub constraints: Vec<Constraint>,
    /// Strategies, in order.
    pub strategies: Vec<Strategy>,
    /// The task's group (`family:NAME` by default).
    pub group: String,
    /// awsvpc: the subnets of its awsvpcConfiguration; the instance must have one of them
    /// (attribute `berth.subnet.NAME`). Empty for the other modes.
    pub subnets: Vec<String>,
    /// The static host ports it holds, (protocol, port): host mode's containerPorts, bridge
    /// mode's nonzero hostPorts.
    pub host_ports: BTreeSet<(String, i32)>,
}

/// Why an instance cannot take the task, as ECS names it in a RunTask failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A required attribute is missing.
    Attribute,
    /// Not enough CPU left.
    Cpu,
    /// Not enough memory left.
    Memory,
    /// A memberOf expression does not match it.
    MemberOf,
    /// It runs another active task.
    DistinctInstance,
    /// A static host port the task needs is in use (or reserved) there.
    Ports,
}

impl Reason {
    /// ECS's failure reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Attribute => "ATTRIBUTE",
            Reason::Cpu => "RESOURCE:CPU",
            Reason::Memory => "RESOURCE:MEMORY",
            Reason::Ports => "RESOURCE:PORTS",
            Reason::MemberOf => "MemberOf placement constraint unsatisfied.",
            Reason::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
        }
    }
}

/// One instance that could not take the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The instance ARN.
    pub arn: String,
    /// Why.
    pub reason: Reason,
    /// What exactly (the missing attributes), when there is more to say.
    pub detail: Option<String>,
}

/// Parses placement constraints (the task definition's first, then the request's), at most
/// [`MAX_CONSTRAINTS`] in all. `field` names them in errors.
pub fn parse_constraints<'a>(
    field: &str,
    constraints: impl IntoIterator<Item = &'a PlacementConstraint>,
) -> Result<Vec<Constraint>, PlacementError> {
    let mut out = Vec::new();
    for (i, c) in constraints.into_iter().enumerate() {
        let expr = c.expression.as_deref().filter(|e| !e.is_empty());
        out.push(match (c.r#type.as_str(), expr) {
            ("distinctInstance", None) => Constraint::DistinctInstance,
            ("distinctInstance", Some(_)) => {
                return Err(PlacementError(format!(
                    "{field}[{i}]: distinctInstance takes no expression"
                )))
            }
            ("memberOf", Some(e)) => Constraint::MemberOf(Box::new(
                query::parse(e)
                    .map_err(|q| PlacementError(format!("{field}[{i}].expression: {q}")))?,
            )),
            ("memberOf", None) => {
                return Err(PlacementError(format!(
                    "{field}[{i}]: memberOf needs an expression"
                )))
            }
            (t, _) => {
                return Err(PlacementError(format!(
                    "{field}[{i}].type: '{t}' is not distinctInstance or memberOf"
                )))
            }
        });
    }
    if out.len() > MAX_CONSTRAINTS {
        return Err(PlacementError(format!(
            "{field}: at most {MAX_CONSTRAINTS} placement constraints per task (the task definition's included), {} given",
            out.len()
        )));
    }
    Ok(out)
}

/// Parses placement strategies, at most [`MAX_STRATEGIES`].
pub fn parse_strategies(
    field: &str,
    strategies: &[PlacementStrategy],
) -> Result<Vec<Strategy>, PlacementError> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(PlacementError(format!(
            "{field}: at most {MAX_STRATEGIES} placement strategies per task, {} given",
            strategies.len()
        )));
    }
    strategies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let f = s.field.as_deref().filter(|f| !f.is_empty());
            let bad = |m: String| PlacementError(format!("{field}[{i}]: {m}"));
            match (s.r#type.as_str(), f) {
                ("random", None) => Ok(Strategy::Random),
                ("random", Some(f)) => Err(bad(format!("random takes no field ('{f}' given)"))),
                ("binpack", Some(f)) => match f.to_ascii_lowercase().as_str() {
                    "cpu" => Ok(Strategy::Binpack(BinpackField::Cpu)),
                    "memory" => Ok(Strategy::Binpack(BinpackField::Memory)),
                    _ => Err(bad(format!("binpack field '{f}' is not cpu or memory"))),
                },
                ("spread", Some("instanceId" | "host")) => {
                    Ok(Strategy::Spread(SpreadField::InstanceId))
                }
                ("spread", Some(f)) => match f.strip_prefix("attribute:") {
                    Some(name) if !name.is_empty() => {
                        Ok(Strategy::Spread(SpreadField::Attribute(name.to_string())))
                    }
                    _ => Err(bad(format!(
                        "spread field '{f}' is not instanceId, host or attribute:NAME"
                    ))),
                },
                ("binpack" | "spread", None) => Err(bad(format!("{} needs a field", s.r#type))),
                (t, _) => Err(bad(format!("type '{t}' is not random, spread or binpack"))),
            }
        })
        .collect()
}

/// The first reason `c` cannot take a task with `needs`, in ECS's order.
fn refusal(c: &Candidate, needs: &Needs) -> Option<Refusal> {
    let missing: Vec<String> = needs
        .attributes
        .iter()
        .filter(
            |(name, value)| match (c.target.attributes.get(name), value) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(have), Some(want)) => have.as_deref() != Some(want.as_str()),
            },
        )
        .map(|(name, value)| match value {
            Some(v) => format!("{name}={v}"),
            None => name.clone(),
        })
        .collect();
    let subnet_attr = |s: &String| format!("berth.subnet.{s}");
    let lacks_subnet = !needs.subnets.is_empty()
        && !needs
            .subnets
            .iter()
            .any(|s| c.target.attributes.contains_key(&subnet_attr(s)));
    let busy: Vec<String> = needs
        .host_ports
        .iter()
        .filter(|p| c.ports_in_use.contains(*p))
        .map(|(proto, port)| format!("{port}/{proto}"))
        .collect();
    let (reason, detail) = if !missing.is_empty() {
        (
            Reason::Attribute,
            Some(format!(
                "the container instance lacks the attribute(s) the task requires: {}",
                missing.join(", ")
            )),
        )
    } else if lacks_subnet {
        (
            Reason::Attribute,
            Some(format!(
                "the container instance has none of the task's subnets: {}",
                needs
                    .subnets
                    .iter()
                    .map(subnet_attr)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )
    } else if c.cpu < needs.cpu {
        (Reason::Cpu, None)
    } else if c.memory < needs.memory {
        (Reason::Memory, None)
    } else if !busy.is_empty() {
        (
            Reason::Ports,
            Some(format!("host ports in use: {}", busy.join(", "))),
        )
    } else if needs
        .constraints
        .iter()
        .any(|k| matches!(k, Constraint::MemberOf(e) if !e.matches(&c.target)))
    {
        (Reason::MemberOf, None)
    } else if c.active_tasks > 0
        && needs
            .constraints
            .iter()
            .any(|k| matches!(k, Constraint::DistinctInstance))
    {
        (Reason::DistinctInstance, None)
    } else {
        return None;
    };
    Some(Refusal {
        arn: c.arn.clone(),
        reason,
        detail,
    })
}

/// How many tasks of `group` the instances with `c`'s value of the spread field hold.
fn spread_count(all: &[Candidate], c: &Candidate, field: &SpreadField, group: &str) -> i64 {
    let in_group = |x: &Candidate| x.target.task_groups.get(group).copied().unwrap_or(0);
    match field {
        SpreadField::InstanceId => in_group(c),
        SpreadField::Attribute(name) => {
            let value = c.target.attributes.get(name);
            all.iter()
                .filter(|x| x.target.attributes.get(name) == value)
                .map(in_group)
                .sum()
        }
    }
}

/// The sort key of `c` under strategies that look only at `c` itself (binpack, spread by
/// instance), then the default (most free memory); `None` when a strategy looks further
/// (spread by attribute, random).
fn own_key(c: &Candidate, strategies: &[Strategy], group: &str, k: &mut Vec<i64>) -> Option<()> {
    k.clear();
    for s in strategies {
        k.push(match s {
            Strategy::Binpack(BinpackField::Cpu) => c.cpu,
            Strategy::Binpack(BinpackField::Memory) => c.memory,
            Strategy::Spread(SpreadField::InstanceId) => {
                c.target.task_groups.get(group).copied().unwrap_or(0)
            }
            Strategy::Spread(SpreadField::Attribute(_)) | Strategy::Random => return None,
        });
    }
    k.push(-c.memory);
    Some(())
}

/// Whether every strategy of `needs` ranks a candidate by its own state alone.
fn ranks_by_own_state(needs: &Needs) -> bool {
    needs.strategies.iter().all(|s| {
        matches!(
            s,
            Strategy::Binpack(_) | Strategy::Spread(SpreadField::InstanceId)
        )
    })
}

/// The best-ranked candidate that can take the task, looking at every candidate.
fn choose(candidates: &[Candidate], needs: &Needs) -> Option<usize> {
    let fit: Vec<usize> = (0..candidates.len())
        .filter(|&i| refusal(&candidates[i], needs).is_none())
        .collect();
    let first = *fit.first()?;
    let mut rng = rand::rng();
    // One sort key per strategy, then the default; compared in order. The first candidate
    // with the smallest key wins; two buffers, not one key per candidate (placing 100,000
    // tasks on 1,000 instances allocated 100 million keys).
    let mut key = |c: &Candidate, k: &mut Vec<i64>| {
        if own_key(c, &needs.strategies, &needs.group, k).is_some() {
            return;
        }
        k.clear();
        k.extend(needs.strategies.iter().map(|s| match s {
            Strategy::Binpack(BinpackField::Cpu) => c.cpu,
            Strategy::Binpack(BinpackField::Memory) => c.memory,
            Strategy::Spread(f) => spread_count(candidates, c, f, &needs.group),
            Strategy::Random => rng.random_range(0..i64::MAX),
        }));
        k.push(-c.memory);
    };
    let (mut best_key, mut k) = (Vec::new(), Vec::new());
    let mut best = first;
    key(&candidates[best], &mut best_key);
    for &i in &fit[1..] {
        key(&candidates[i], &mut k);
        if k < best_key {
            best = i;
            std::mem::swap(&mut best_key, &mut k);
        }
    }
    Some(best)
}

/// Takes what the task needs from the candidate it was placed on, so the next placement sees
/// it.
fn reserve(c: &mut Candidate, needs: &Needs) {
    c.cpu -= needs.cpu;
    c.memory -= needs.memory;
    c.active_tasks += 1;
    c.ports_in_use.extend(needs.host_ports.iter().cloned());
    c.target.running_tasks_count += 1;
    *c.target.task_groups.entry(needs.group.clone()).or_default() += 1;
}

/// Places a task: the best-ranked candidate that can take it, whose remaining resources,
/// task count and group count are then updated (so the next task of the same RunTask sees
/// them). Otherwise one [`Refusal`] per candidate.
pub fn place(candidates: &mut [Candidate], needs: &Needs) -> Result<usize, Vec<Refusal>> {
    match choose(candidates, needs) {
        Some(best) => {
            reserve(&mut candidates[best], needs);
            Ok(best)
        }
        None => Err(candidates
            .iter()
            .filter_map(|c| refusal(c, needs))
            .collect()),
    }
}

/// Candidates kept in rank order for the rankings placements use, so placing a task looks at
/// candidates best-first and stops at the first that can take it, instead of checking and
/// ranking every candidate (that was 17 % of issue 12's placement benchmark at 40,000 tasks,
/// 1,000 instances). Only for strategies that rank a candidate by its own state (binpack,
/// spread by instance, the default); the others fall back to [`place`]. Either way the choice
/// is [`place`]'s: `tests::a_pool_places_exactly_as_place_does` compares them.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    candidates: Vec<Candidate>,
    ranks: Vec<Rank>,
}

/// One ranking's order: (key, candidate index), smallest first, and each candidate's key.
#[derive(Debug, Clone)]
struct Rank {
    strategies: Vec<Strategy>,
    group: String,
    keys: Vec<Vec<i64>>,
    order: BTreeSet<(Vec<i64>, usize)>,
}

impl Pool {
    /// A pool of `candidates`.
    pub fn new(candidates: Vec<Candidate>) -> Self {
        Self {
            candidates,
            ranks: Vec::new(),
        }
    }

    /// The candidates, with what was placed so far reserved.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Places a task as [`place`] does.
    pub fn place(&mut self, needs: &Needs) -> Result<usize, Vec<Refusal>> {
        let chosen = if ranks_by_own_state(needs) {
            let r = self.rank(needs);
            let cands = &self.candidates;
            self.ranks[r]
                .order
                .iter()
                .map(|(_, i)| *i)
                .find(|&i| refusal(&cands[i], needs).is_none())
        } else {
            choose(&self.candidates, needs)
        };
        let Some(best) = chosen else {
            return Err(self
                .candidates
                .iter()
                .filter_map(|c| refusal(c, needs))
                .collect());
        };
        reserve(&mut self.candidates[best], needs);
        let c = &self.candidates[best];
        for r in &mut self.ranks {
            let mut k = Vec::new();
            if own_key(c, &r.strategies, &r.group, &mut k).is_some() && k != r.keys[best] {
                let old = std::mem::replace(&mut r.keys[best], k.clone());
                r.order.remove(&(old, best));
                r.order.insert((k, best));
            }
        }
        Ok(best)
    }

    /// The index of the ranking for `needs`' strategies and group, made on first use.
    fn rank(&mut self, needs: &Needs) -> usize {
        if let Some(i) = self
            .ranks
            .iter()
            .position(|r| r.strategies == needs.strategies && r.group == needs.group)
        {
            return i;
        }
        let keys: Vec<Vec<i64>> = self
            .candidates
            .iter()
            .map(|c| {
                let mut k = Vec::new();
                let _ = own_key(c, &needs.strategies, &needs.group, &mut k);
                k
            })
            .collect();
        let order = keys.iter().cloned().zip(0..).collect();
        self.ranks.push(Rank {
            strategies: needs.strategies.clone(),
            group: needs.group.clone(),
            keys,
            order,
        });
        self.ranks.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Lcg;

    fn cand(arn: &str, cpu: i64, memory: i64) -> Candidate {
        Candidate {
            arn: arn.into(),
            cpu,
            memory,
            target: Target::default(),
            active_tasks: 0,
            ports_in_use: BTreeSet::new(),
        }
    }

    fn with_attr(mut c: Candidate, name: &str, value: Option<&str>) -> Candidate {
        c.target
            .attributes
            .insert(name.into(), value.map(str::to_string));
        c
    }

    fn needs(cpu: i64, memory: i64) -> Needs {
        Needs {
            cpu,
            memory,
            group: "family:web".into(),
            ..Default::default()
        }
    }

    fn reasons(r: Vec<Refusal>) -> Vec<(String, &'static str)> {
        r.into_iter().map(|x| (x.arn, x.reason.as_str())).collect()
    }

    fn strategy(t: &str, f: Option<&str>) -> PlacementStrategy {
        PlacementStrategy {
            r#type: t.into(),
            field: f.map(str::to_string),
        }
    }

    fn constraint(t: &str, e: Option<&str>) -> PlacementConstraint {
        PlacementConstraint {
            r#type: t.into(),
            expression: e.map(str::to_string),
        }
    }

    #[test]
    fn spreads_by_free_memory_and_reserves() {
        let mut c = vec![cand("a", 2048, 1000), cand("b", 2048, 3000)];
        assert_eq!(place(&mut c, &needs(256, 512)), Ok(1));
        assert_eq!(c[1].memory, 2488);
        assert_eq!(c[1].cpu, 1792);
        assert_eq!(c[1].target.task_groups.get("family:web"), Some(&1));
    }

    #[test]
    fn reports_the_missing_resource_per_instance() {
        let mut c = vec![cand("a", 100, 5000), cand("b", 4096, 100)];
        let err = place(&mut c, &needs(512, 512)).unwrap_err();
        assert_eq!(
            reasons(err),
            vec![
                ("a".to_string(), "RESOURCE:CPU"),
                ("b".to_string(), "RESOURCE:MEMORY")
            ]
        );
    }

    #[test]
    fn a_required_attribute_limits_the_candidates() {
        let p = "com.amazonaws.ecs.capability.privileged-container";
        let privileged = with_attr(cand("p", 1024, 100), p, None);
        let mut c = vec![cand("a", 4096, 5000), privileged];
        let mut n = needs(256, 50);
        n.attributes = vec![(p.into(), None)];
        assert_eq!(
            place(&mut c, &n),
            Ok(1),
            "not the roomier instance without it"
        );
        n.memory = 500;
        let err = place(&mut c, &n).unwrap_err();
        assert!(err[0].detail.as_deref().unwrap().contains(p));
        assert_eq!(
            reasons(err),
            vec![
                ("a".to_string(), "ATTRIBUTE"),
                ("p".to_string(), "RESOURCE:MEMORY")
            ]
        );
    }

    #[test]
    fn a_required_value_must_match_so_an_arm_task_never_lands_on_x86() {
        let mut c = vec![
            with_attr(
                cand("x86", 4096, 5000),
                "ecs.cpu-architecture",
                Some("x86_64"),
            ),
            with_attr(
                cand("arm", 1024, 500),
                "ecs.cpu-architecture",
                Some("arm64"),
            ),
        ];
        let mut n = needs(256, 64);
        n.attributes = vec![("ecs.cpu-architecture".into(), Some("arm64".into()))];
        assert_eq!(place(&mut c, &n), Ok(1));
        c.truncate(1);
        let err = place(&mut c, &n).unwrap_err();
        assert_eq!(err[0].reason, Reason::Attribute);
        assert!(err[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("ecs.cpu-architecture=arm64"));
    }

    #[test]
    fn member_of_filters_by_the_query_language() {
        let mut c = vec![
            with_attr(cand("a", 4096, 5000), "stack", Some("dev")),
            with_attr(cand("b", 1024, 500), "stack", Some("prod")),
        ];
        let mut n = needs(256, 64);
        n.constraints = parse_constraints(
            "placementConstraints",
            &[constraint("memberOf", Some("attribute:stack == prod"))],
        )
        .unwrap();
        assert_eq!(place(&mut c, &n), Ok(1));
        n.memory = 1000;
        assert_eq!(
            reasons(place(&mut c, &n).unwrap_err()),
            vec![
                (
                    "a".to_string(),
                    "MemberOf placement constraint unsatisfied."
                ),
                ("b".to_string(), "RESOURCE:MEMORY")
            ]
        );
    }

    #[test]
    fn distinct_instance_puts_each_task_of_a_run_on_its_own_instance() {
        let mut c = vec![cand("a", 4096, 5000), cand("b", 4096, 4000)];
        let mut n = needs(256, 64);
        n.constraints = parse_constraints(
            "placementConstraints",
            &[constraint("distinctInstance", None)],
        )
        .unwrap();
        assert_eq!(place(&mut c, &n), Ok(0));
        assert_eq!(place(&mut c, &n), Ok(1));
        assert_eq!(
            reasons(place(&mut c, &n).unwrap_err()),
            vec![
                (
                    "a".to_string(),
                    "DistinctInstance placement constraint unsatisfied."
                ),
                (
                    "b".to_string(),
                    "DistinctInstance placement constraint unsatisfied."
                )
            ]
        );
    }

    #[test]
    fn binpack_takes_the_least_room_that_fits() {
        let mut c = vec![
            cand("big", 4096, 8000),
            cand("small", 512, 600),
            cand("tiny", 128, 100),
        ];
        let mut n = needs(256, 512);
        n.strategies =
            parse_strategies("placementStrategy", &[strategy("binpack", Some("memory"))]).unwrap();
        assert_eq!(place(&mut c, &n), Ok(1));
        n.strategies =
            parse_strategies("placementStrategy", &[strategy("binpack", Some("cpu"))]).unwrap();
        let mut c = vec![cand("big", 4096, 100), cand("small", 512, 8000)];
        n.memory = 50;
        assert_eq!(place(&mut c, &n), Ok(1));
    }

    #[test]
    fn spread_over_instances_and_attribute_values_then_binpack_breaks_ties() {
        let mut c = vec![
            with_attr(cand("a1", 4096, 8000), "zone", Some("a")),
            with_attr(cand("a2", 4096, 2000), "zone", Some("a")),
            with_attr(cand("b1", 4096, 9000), "zone", Some("b")),
        ];
        c[0].target.task_groups.insert("family:web".into(), 1);
        let mut n = needs(256, 64);
        n.strategies = parse_strategies(
            "placementStrategy",
            &[
                strategy("spread", Some("attribute:zone")),
                strategy("binpack", Some("memory")),
            ],
        )
        .unwrap();
        // zone a holds one task of the group, zone b none.
        assert_eq!(place(&mut c, &n), Ok(2));
        // Now both zones hold one; binpack picks the fullest instance.
        assert_eq!(place(&mut c, &n), Ok(1));
        n.strategies = parse_strategies(
            "placementStrategy",
            &[strategy("spread", Some("instanceId"))],
        )
        .unwrap();
        let mut c = vec![cand("x", 4096, 8000), cand("y", 4096, 2000)];
        c[0].target.task_groups.insert("family:web".into(), 2);
        assert_eq!(place(&mut c, &n), Ok(1));
        // Tasks of another group do not count.
        n.group = "family:other".into();
        assert_eq!(place(&mut c, &n), Ok(0));
    }

    #[test]
    fn random_places_somewhere_that_fits() {
        let mut n = needs(256, 64);
        n.strategies = parse_strategies("placementStrategy", &[strategy("random", None)]).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let mut c = vec![
                cand("a", 4096, 8000),
                cand("b", 4096, 8000),
                cand("full", 0, 0),
            ];
            seen.insert(place(&mut c, &n).unwrap());
        }
        assert_eq!(seen, [0, 1].into_iter().collect());
    }

    #[test]
    fn a_pool_places_exactly_as_place_does() {
        let mut rng = Lcg(11);
        let strategies = [
            vec![],
            vec![Strategy::Binpack(BinpackField::Memory)],
            vec![Strategy::Binpack(BinpackField::Cpu)],
            vec![Strategy::Spread(SpreadField::InstanceId)],
            vec![
                Strategy::Spread(SpreadField::InstanceId),
                Strategy::Binpack(BinpackField::Memory),
            ],
            vec![Strategy::Spread(SpreadField::Attribute("zone".into()))],
        ];
        let (mut placed, mut refused) = (0, 0);
        for round in 0..40 {
            let n = 1 + rng.next(30) as usize;
            let cands: Vec<Candidate> = (0..n)
                .map(|i| {
                    let mut c = cand(
                        &format!("i{i}"),
                        rng.next(5) as i64 * 256,
                        rng.next(6) as i64 * 256,
                    );
                    c.target
                        .attributes
                        .insert("zone".into(), Some(format!("z{}", rng.next(3))));
                    if rng.next(2) == 0 {
                        c.target.attributes.insert("gpu".into(), None);
                    }
                    c
                })
                .collect();
            let mut plain = cands.clone();
            let mut pool = Pool::new(cands);
            for step in 0..60 {
                let mut nd = needs(rng.next(3) as i64 * 128, rng.next(3) as i64 * 128);
                nd.group = format!("family:g{}", rng.next(2));
                nd.strategies = strategies[rng.next(strategies.len() as u64) as usize].clone();
                if rng.next(5) == 0 {
                    nd.attributes.push(("gpu".into(), None));
                }
                if rng.next(6) == 0 {
                    nd.constraints.push(Constraint::DistinctInstance);
                }
                if rng.next(6) == 0 {
                    nd.host_ports.insert(("tcp".into(), 8080));
                }
                let want = place(&mut plain, &nd);
                let got = pool.place(&nd);
                match (&want, &got) {
                    (Ok(_), _) => placed += 1,
                    (Err(_), _) => refused += 1,
                }
                assert_eq!(
                    want.map_err(reasons),
                    got.map_err(reasons),
                    "round {round} step {step}"
                );
                for (x, y) in plain.iter().zip(pool.candidates()) {
                    assert_eq!(
                        (x.cpu, x.memory, x.active_tasks, &x.target.task_groups),
                        (y.cpu, y.memory, y.active_tasks, &y.target.task_groups),
                        "round {round} step {step}"
                    );
                }
            }
        }
        assert!(
            placed > 500 && refused > 100,
            "{placed} placed, {refused} refused"
        );
    }

    #[test]
    fn malformed_constraints_and_strategies_are_refused_by_name() {
        let f = "placementConstraints";
        for (c, want) in [
            (constraint("distinctInstance", Some("x")), "no expression"),
            (constraint("memberOf", None), "needs an expression"),
            (constraint("memberOf", Some("bogus == 1")), "bogus"),
            (constraint("sameHost", None), "sameHost"),
        ] {
            let e = parse_constraints(f, &[c]).unwrap_err();
            assert!(e.0.contains(want) && e.0.contains(f), "{e}");
        }
        let eleven: Vec<_> = (0..11)
            .map(|_| constraint("distinctInstance", None))
            .collect();
        assert!(parse_constraints(f, &eleven)
            .unwrap_err()
            .0
            .contains("at most 10"));
        let f = "placementStrategy";
        for (s, want) in [
            (strategy("binpack", Some("disk")), "disk"),
            (strategy("binpack", None), "needs a field"),
            (strategy("spread", Some("zone")), "zone"),
            (strategy("random", Some("cpu")), "no field"),
            (strategy("roundRobin", None), "roundRobin"),
        ] {
            let e = parse_strategies(f, &[s]).unwrap_err();
            assert!(e.0.contains(want), "{e}");
        }
        let six: Vec<_> = (0..6).map(|_| strategy("random", None)).collect();
        assert!(parse_strategies(f, &six)
            .unwrap_err()
            .0
            .contains("at most 5"));
    }
}
