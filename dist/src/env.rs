//! The launch environment: torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, also what Kubernetes operators for PyTorch
//! set) or Slurm's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NTASKS_PER_NODE`, with
//! `MASTER_ADDR`/`MASTER_PORT` exported by the batch script), parsed into one [`WorldSpec`].
//!
//! Precedence: `RANK`/`WORLD_SIZE` when either is set (torchrun started inside a Slurm job wins),
//! else `SLURM_PROCID`, else a single process. Inconsistent values are errors naming the variable.

use crate::DistError;

/// Who set the environment this process was started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    /// No launcher variables: one process.
    Single,
    /// torchrun, `brats-ldm train --nproc-per-node`, or a Kubernetes PyTorch operator.
    Torchrun,
    /// `srun` (one task per rank).
    Slurm,
}

/// This process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldSpec {
    pub kind: LaunchKind,
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this node (picks the GPU later).
    pub local_rank: usize,
    /// Processes on this node, when the launcher says.
    pub local_world_size: Option<usize>,
    /// Rank 0's rendezvous address; required when `world_size > 1`.
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
}

fn err(msg: String) -> DistError {
    DistError::Env(msg)
}

fn parse_count(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<usize>, DistError> {
    match get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| err(format!("{name}={v:?} is not a non-negative integer"))),
    }
}

impl WorldSpec {
    /// One process, no rendezvous.
    pub fn single() -> Self {
        WorldSpec {
            kind: LaunchKind::Single,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: Some(1),
            master_addr: None,
            master_port: None,
        }
    }

    /// Reads this process's environment.
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_lookup(&|k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Parses from any variable lookup (tests pass a map).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let count = |n: &str| parse_count(get, n);
        let (kind, rank, world, local_rank, local_world) =
            if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
                let rank = count("RANK")?
                    .ok_or_else(|| err("WORLD_SIZE is set but RANK is not".into()))?;
                let world = count("WORLD_SIZE")?
                    .ok_or_else(|| err("RANK is set but WORLD_SIZE is not".into()))?;
                (
                    LaunchKind::Torchrun,
                    rank,
                    world,
                    count("LOCAL_RANK")?.unwrap_or(0),
                    count("LOCAL_WORLD_SIZE")?,
                )
            } else if get("SLURM_PROCID").is_some() {
                let rank = count("SLURM_PROCID")?.unwrap_or(0);
                let world = count("SLURM_NTASKS")?
                    .ok_or_else(|| err("SLURM_PROCID is set but SLURM_NTASKS is not".into()))?;
                // SLURM_NTASKS_PER_NODE is a plain number only when the job asked for one.
                let local_world =
                    get("SLURM_NTASKS_PER_NODE").and_then(|v| v.trim().parse::<usize>().ok());
                (
                    LaunchKind::Slurm,
                    rank,
                    world,
                    count("SLURM_LOCALID")?.unwrap_or(0),
                    local_world,
                )
            } else {
                return Ok(Self::single());
            };
        let (wname, rname) = match kind {
            LaunchKind::Slurm => ("SLURM_NTASKS", "SLURM_PROCID"),
            _ => ("WORLD_SIZE", "RANK"),
        };
        if world == 0 {
            return Err(err(format!("{wname}=0: a run needs at least one process")));
        }
        if rank >= world {
            return Err(err(format!("{rname}={rank} is not below {wname}={world}")));
        }
        if let Some(lw) = local_world {
            if lw == 0 || lw > world {
                return Err(err(format!(
                    "local world size {lw} must be between 1 and the world size {world}"
                )));
            }
            if local_rank >= lw {
                return Err(err(format!(
                    "local rank {local_rank} is not below the local world size {lw}"
                )));
            }
        } else if local_rank >= world {
            return Err(err(format!(
                "local rank {local_rank} is not below the world size {world}"
            )));
        }
        let master_addr = get("MASTER_ADDR")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let master_port = match get("MASTER_PORT") {
            None => None,
            Some(v) => match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    return Err(err(format!(
                        "MASTER_PORT={v:?} is not a port number (1-65535)"
                    )))
                }
            },
        };
        if world > 1 {
            if master_addr.is_none() {
                return Err(err(format!(
                    "{wname}={world} needs MASTER_ADDR (the host of rank 0; in a Slurm script: \
                     export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1))"
                )));
            }
            if master_port.is_none() {
                return Err(err(format!(
                    "{wname}={world} needs MASTER_PORT (a free TCP port on rank 0's host)"
                )));
            }
        }
        Ok(WorldSpec {
            kind,
            rank,
            world_size: world,
            local_rank,
            local_world_size: local_world,
            master_addr,
            master_port,
        })
    }

    /// More than one process.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// `MASTER_ADDR:MASTER_PORT` (brackets around IPv6 literals).
    pub fn master_endpoint(&self) -> Option<String> {
        let (a, p) = (self.master_addr.as_ref()?, self.master_port?);
        Some(if a.contains(':') && !a.starts_with('[') {
            format!("[{a}]:{p}")
        } else {
            format!("{a}:{p}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<WorldSpec, DistError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WorldSpec::from_lookup(&move |k: &str| m.get(k).cloned())
    }

    fn msg(vars: &[(&str, &str)]) -> String {
        parse(vars).unwrap_err().to_string()
    }

    #[test]
    fn nothing_set_is_one_process() {
        let s = parse(&[]).unwrap();
        assert_eq!(s, WorldSpec::single());
        assert!(!s.is_distributed());
    }

    #[test]
    fn torchrun_variables() {
        let s = parse(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.kind,
                s.rank,
                s.world_size,
                s.local_rank,
                s.local_world_size
            ),
            (LaunchKind::Torchrun, 3, 8, 1, Some(2))
        );
        assert_eq!(s.master_endpoint().unwrap(), "node0:29500");
        // Kubernetes operators set no LOCAL_RANK: one process per pod.
        let k = parse(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "::1"),
            ("MASTER_PORT", "23456"),
        ])
        .unwrap();
        assert_eq!((k.local_rank, k.local_world_size), (0, None));
        assert_eq!(k.master_endpoint().unwrap(), "[::1]:23456");
        // A world of one needs no master.
        assert_eq!(
            parse(&[("RANK", "0"), ("WORLD_SIZE", "1")])
                .unwrap()
                .world_size,
            1
        );
    }

    #[test]
    fn slurm_variables_and_precedence() {
        let s = parse(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "4"),
            ("MASTER_ADDR", "n01"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.kind,
                s.rank,
                s.world_size,
                s.local_rank,
                s.local_world_size
            ),
            (LaunchKind::Slurm, 5, 8, 1, Some(4))
        );
        // torchrun inside a Slurm job: RANK wins.
        let t = parse(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap();
        assert_eq!((t.kind, t.rank, t.world_size), (LaunchKind::Torchrun, 1, 2));
        // "2(x3)" is not a plain count: unknown, not an error.
        let u = parse(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_NTASKS_PER_NODE", "2(x3)"),
        ])
        .unwrap();
        assert_eq!(u.local_world_size, None);
    }

    #[test]
    fn inconsistent_values_are_named() {
        let m = msg(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "1"),
        ]);
        assert!(m.contains("RANK=2 is not below WORLD_SIZE=2"), "{m}");
        let m = msg(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")]);
        assert!(
            m.contains("SLURM_PROCID=4 is not below SLURM_NTASKS=4"),
            "{m}"
        );
        assert!(msg(&[("RANK", "0")]).contains("RANK is set but WORLD_SIZE is not"));
        assert!(msg(&[("WORLD_SIZE", "2")]).contains("WORLD_SIZE is set but RANK is not"));
        assert!(msg(&[("SLURM_PROCID", "0")]).contains("SLURM_NTASKS"));
        assert!(msg(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .contains("RANK=\"x\" is not a non-negative integer"));
        assert!(msg(&[("RANK", "0"), ("WORLD_SIZE", "0")]).contains("WORLD_SIZE=0"));
        let m = msg(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "29500")]);
        assert!(m.contains("needs MASTER_ADDR"), "{m}");
        let m = msg(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(m.contains("needs MASTER_PORT"), "{m}");
        for bad in ["0", "70000", "http"] {
            let m = msg(&[
                ("RANK", "1"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", bad),
            ]);
            assert!(
                m.contains("MASTER_PORT") && m.contains("not a port number"),
                "{m}"
            );
        }
        let m = msg(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "9"),
        ]);
        assert!(
            m.contains("local rank 2 is not below the local world size 2"),
            "{m}"
        );
        let m = msg(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_WORLD_SIZE", "3"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "9"),
        ]);
        assert!(m.contains("local world size 3"), "{m}");
    }
}
