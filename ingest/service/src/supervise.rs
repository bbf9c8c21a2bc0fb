//! One shutdown root for a binary's tasks: named tasks in ordered stop stages; the first
//! failure stops the rest and is returned with its reason.
//!
//! ```text
//! shutdown ─▶ root (stage 0) ─▶ stage 1 ─▶ stage 2 …   each stage: cancel its token,
//!  (caller)     ▲                                       join its tasks within its grace,
//!               └── a task fails, panics, or a          abort what is left
//!                   [`Role::Root`] task ends
//! ```
//!
//! A service spawns its tasks with [`Supervisor::spawn`] and waits on [`Supervisor::run`].
//! Stage 0's token is a child of the caller's `shutdown`, so the supervisor never cancels
//! its caller's token. Later stages stop only after the earlier ones have ended: the
//! ingestor's cursor saver stops after the publisher has drained, the lease after that.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// What a task's end means when it ends well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its end ends the run (gracefully): a service's main loop.
    Root,
    /// Runs until its stage is stopped; an earlier end is a failure.
    Keeper,
    /// May end at any time (e.g. a logger that is switched off).
    Helper,
}

/// Why a supervised run stopped on a failure.
#[derive(Debug)]
pub enum TaskError<E> {
    /// The task returned an error.
    Failed {
        /// The task's name.
        task: &'static str,
        /// Its error.
        source: E,
    },
    /// The task panicked (a bug).
    Panicked {
        /// The task's name.
        task: &'static str,
        /// The panic.
        source: JoinError,
    },
    /// A [`Role::Keeper`] ended before it was told to.
    StoppedEarly {
        /// The task's name.
        task: &'static str,
    },
}

impl<E> TaskError<E> {
    /// The name of the task that failed.
    pub fn task(&self) -> &'static str {
        match self {
            TaskError::Failed { task, .. }
            | TaskError::Panicked { task, .. }
            | TaskError::StoppedEarly { task } => task,
        }
    }

    /// The task's own error, when it returned one.
    pub fn into_source(self) -> Option<E> {
        match self {
            TaskError::Failed { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl<E> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed { task, .. } => write!(f, "{task} stopped"),
            TaskError::Panicked { task, .. } => write!(f, "{task} panicked"),
            TaskError::StoppedEarly { task } => write!(f, "{task} stopped early"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TaskError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Failed { source, .. } => Some(source),
            TaskError::Panicked { source, .. } => Some(source),
            TaskError::StoppedEarly { .. } => None,
        }
    }
}

struct Stage {
    stop: CancellationToken,
    grace: Duration,
}

struct Task {
    name: &'static str,
    role: Role,
    stage: usize,
    abort: AbortHandle,
}

/// Named tasks in stop stages under one root token (see the module docs).
pub struct Supervisor<E> {
    stages: Vec<Stage>,
    set: JoinSet<Result<(), E>>,
    tasks: HashMap<Id, Task>,
    failure: Option<TaskError<E>>,
}

impl<E: std::error::Error + Send + 'static> Supervisor<E> {
    /// A supervisor whose stage 0 stops when `shutdown` fires (or on the first failure)
    /// and is given `grace` to end before what is left of it is aborted (`Duration::MAX`:
    /// as long as it takes; the same for [`Supervisor::stage`]).
    pub fn new(shutdown: &CancellationToken, grace: Duration) -> Self {
        Supervisor {
            stages: vec![Stage {
                stop: shutdown.child_token(),
                grace,
            }],
            set: JoinSet::new(),
            tasks: HashMap::new(),
            failure: None,
        }
    }

    /// Adds a stage stopped after every earlier one has ended; returns its number.
    pub fn stage(&mut self, grace: Duration) -> usize {
        self.stages.push(Stage {
            stop: CancellationToken::new(),
            grace,
        });
        self.stages.len() - 1
    }

    /// The token that stops `stage` (stage 0's is the root: cancelling it stops the run).
    pub fn token(&self, stage: usize) -> CancellationToken {
        self.stages[stage].stop.clone()
    }

    /// Spawns `task(stop)` in `stage`, where `stop` is the stage's token.
    pub fn spawn<F, Fut, Er>(&mut self, stage: usize, name: &'static str, role: Role, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), Er>> + Send + 'static,
        Er: Into<E>,
    {
        let fut = task(self.token(stage));
        let abort = self.set.spawn(async move { fut.await.map_err(Into::into) });
        let task = Task {
            name,
            role,
            stage,
            abort,
        };
        self.tasks.insert(task.abort.id(), task);
    }

    /// Waits for the root to be cancelled (by the caller, a failure or a [`Role::Root`]
    /// task's end), stops the stages in order, and returns the first failure.
    pub async fn run(mut self) -> Result<(), TaskError<E>> {
        let root = self.token(0);
        loop {
            tokio::select! {
                _ = root.cancelled() => break,
                Some(joined) = self.set.join_next_with_id() => self.settle(joined),
            }
        }
        for stage in 0..self.stages.len() {
            self.stages[stage].stop.cancel();
            // `Duration::MAX`: no deadline.
            let deadline = tokio::time::Instant::now().checked_add(self.stages[stage].grace);
            while self.tasks.values().any(|t| t.stage == stage) {
                let next = self.set.join_next_with_id();
                let joined = match deadline {
                    Some(d) => tokio::time::timeout_at(d, next).await,
                    None => Ok(next.await),
                };
                match joined {
                    Ok(Some(joined)) => self.settle(joined),
                    Ok(None) => break,
                    Err(_) => {
                        self.tasks.retain(|_, t| {
                            if t.stage != stage {
                                return true;
                            }
                            tracing::warn!(task = t.name, "did not stop in time; aborted");
                            t.abort.abort();
                            false
                        });
                    }
                }
            }
        }
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records what an ended task means.
    fn settle(&mut self, joined: Result<(Id, Result<(), E>), JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some(task) = self.tasks.remove(&id) else {
            return; // aborted after its grace
        };
        let stopped = self.stages[task.stage].stop.is_cancelled();
        let failure = match joined {
            Ok((_, Ok(()))) => match task.role {
                Role::Keeper if !stopped => Some(TaskError::StoppedEarly { task: task.name }),
                Role::Root => {
                    self.stages[0].stop.cancel();
                    None
                }
                _ => None,
            },
            Ok((_, Err(source))) => Some(TaskError::Failed {
                task: task.name,
                source,
            }),
            Err(e) if e.is_panic() => Some(TaskError::Panicked {
                task: task.name,
                source: e,
            }),
            Err(_) => None, // cancelled: only an abort does that
        };
        if let Some(e) = failure {
            self.stages[0].stop.cancel();
            match self.failure {
                // The first failure is returned; later ones are logged here.
                Some(_) => {
                    tracing::error!(error = %crate::telemetry::Chain(&e), "after the first failure")
                }
                None => self.failure = Some(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("broken")]
    struct Broken;

    fn shutdown() -> CancellationToken {
        CancellationToken::new()
    }

    #[tokio::test]
    async fn the_first_failure_stops_the_rest_and_is_returned() {
        let s = shutdown();
        let mut sup: Supervisor<Broken> = Supervisor::new(&s, Duration::from_secs(5));
        let later = sup.stage(Duration::from_secs(5));
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        sup.spawn(0, "waits", Role::Keeper, |stop| async move {
            stop.cancelled().await;
            Ok::<_, Broken>(())
        });
        sup.spawn(later, "saver", Role::Keeper, |stop| async move {
            stop.cancelled().await;
            let _ = seen_tx.send(());
            Ok::<_, Broken>(())
        });
        sup.spawn(0, "fails", Role::Keeper, |_| async { Err(Broken) });
        let e = sup.run().await.err();
        assert!(
            matches!(e, Some(TaskError::Failed { task: "fails", .. })),
            "{e:?}"
        );
        assert!(
            seen_rx.await.is_ok(),
            "the later stage was stopped and ran to its end"
        );
        assert!(!s.is_cancelled(), "the caller's token is left alone");
    }

    #[tokio::test]
    async fn a_keeper_that_ends_early_is_a_failure_and_a_panic_is_reported() {
        let s = shutdown();
        let mut sup: Supervisor<Broken> = Supervisor::new(&s, Duration::from_secs(5));
        sup.spawn(0, "keeper", Role::Keeper, |_| async { Ok::<_, Broken>(()) });
        let e = sup.run().await.err();
        assert!(
            matches!(e, Some(TaskError::StoppedEarly { task: "keeper" })),
            "{e:?}"
        );

        let mut sup: Supervisor<Broken> = Supervisor::new(&s, Duration::from_secs(5));
        sup.spawn(0, "bug", Role::Keeper, |_| async {
            if true {
                panic!("a bug");
            }
            Ok::<_, Broken>(())
        });
        let e = sup.run().await.err();
        assert!(
            matches!(e, Some(TaskError::Panicked { task: "bug", .. })),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_root_task_ending_stops_the_run_well_and_helpers_may_end() {
        let s = shutdown();
        let mut sup: Supervisor<Broken> = Supervisor::new(&s, Duration::from_secs(5));
        sup.spawn(0, "off", Role::Helper, |_| async { Ok::<_, Broken>(()) });
        sup.spawn(0, "server", Role::Keeper, |stop| async move {
            stop.cancelled().await;
            Ok::<_, Broken>(())
        });
        sup.spawn(0, "loop", Role::Root, |_| async {
            tokio::task::yield_now().await;
            Ok::<_, Broken>(())
        });
        assert!(sup.run().await.is_ok());
    }

    #[tokio::test]
    async fn the_callers_shutdown_stops_every_stage_and_a_stuck_task_is_aborted() {
        let s = shutdown();
        let mut sup: Supervisor<Broken> = Supervisor::new(&s, Duration::from_millis(50));
        sup.spawn(0, "stuck", Role::Keeper, |_| async {
            std::future::pending::<()>().await;
            Ok::<_, Broken>(())
        });
        s.cancel();
        assert!(
            sup.run().await.is_ok(),
            "an abort after the grace is not a failure"
        );
    }
}
