//! The step-DAG executor: the part of apply that knows nothing about hosts.
//!
//! The apply engine lowers a plan into [`Step`]s (create a bridge, define a
//! domain, wait for a lease, …), joins them with [`Dag::depend`], and calls
//! [`Dag::run`]. The executor guarantees:
//!
//! - **Order.** A step starts only after every one of its dependencies has
//!   finished successfully (`Done` or `AlreadyDone`).
//! - **Bounded parallelism, per pool.** At most `parallelism` non-wait steps of one
//!   pool ([`Step::pool`]: a fleet's host) run at a
//!   time, on a fixed pool of that many worker threads (0 counts as 1).
//!   Wait steps ([`Step::is_wait`]: console pattern, DHCP lease, guest agent, TCP port)
//!   run on a thread of their own each and hold no slot — unlike Terraform,
//!   where a vertex keeps its semaphore slot while it waits.
//! - **Failure stops dependents only.** A failed step's transitive dependents
//!   are skipped ([`Event::Skipped`] names the failed step); everything
//!   independent still runs to completion. There is no rollback: steps are
//!   idempotent and a re-run converges.
//! - **Determinism where there is a choice.** Ready steps are dispatched in
//!   ascending [`StepId`] order, and their `Started` events are emitted in
//!   that order. With `parallelism == 1` the run order is exactly that.
//! - **Panics are failures.** A panic inside a step (or its `describe`) is
//!   caught and reported as that step's failure; a panic inside the observer
//!   is caught and logged. The executor itself never unwinds (this relies on
//!   `panic = "unwind"`, Cargo's default).
//! - **Cancellation.** [`Cancel::cancel`] stops dispatching: running steps
//!   see [`StepContext::is_cancelled`] (and [`StepContext::sleep`] returns
//!   early), steps not started yet are reported as cancelled.
//! - **Cycles never hang.** [`Dag::validate`] reports a cycle; if `run` is
//!   called anyway, the steps on a cycle fail ("dependency cycle: …"), their
//!   dependents are skipped and the rest runs.
//!
//! Bookkeeping is single-threaded on the calling thread (the coordinator):
//! O(V + E) for the dependency counts and skip propagation, plus O(log V)
//! per dispatch for the ready heap. Threads block on channels; nothing
//! busy-waits.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Index of a step in its [`Dag`], as returned by [`Dag::add`].
pub type StepId = usize;

/// One idempotent operation on the host.
pub trait Step: Send + Sync {
    /// Short description for progress lines: "create bridge vf-lan0",
    /// "define domain demo-web".
    fn describe(&self) -> String;
    /// The resource address it belongs to ("instance.web"), for the report.
    fn address(&self) -> &str;
    /// Waits (console pattern, DHCP lease, TCP port) do not hold a
    /// parallelism slot: each runs on a thread of its own.
    fn is_wait(&self) -> bool {
        false
    }
    /// The pool whose slots the step takes: `parallelism` slots per pool
    /// (one pool per host in a fleet: a slow host does not starve the others).
    fn pool(&self) -> usize {
        0
    }
    /// Runs the step. Steps are idempotent and re-check the host themselves;
    /// a step that finds nothing to do returns [`StepOutcome::AlreadyDone`].
    /// Long steps should poll [`StepContext::is_cancelled`] or sleep with
    /// [`StepContext::sleep`].
    fn run(&self, cx: &StepContext) -> Result<StepOutcome, StepError>;
}

/// What a successful step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step changed the host.
    Done,
    /// The re-check found nothing to do.
    AlreadyDone,
}

/// Why a step failed: a message naming the operation and the object, and
/// optionally what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    pub hint: Option<String>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError { message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error a step returns when it stops because the run was cancelled.
    pub fn cancelled() -> Self {
        StepError::new("interrupted: the run was cancelled")
            .with_hint("re-run apply to finish; completed steps are not repeated")
    }

    fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a non-string payload".to_string()
        };
        StepError::new(format!("internal error: the step panicked: {what}"))
            .with_hint("this is a bug in virtform; please report it with this message")
    }
}

/// A cancellation flag shared by the caller (signal handling) and the steps.
///
/// Cloning shares the flag. `cancel` takes a lock: call it from a normal
/// thread (e.g. a signal-handling thread), not from inside a signal handler.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation: no new step is dispatched, sleeping steps wake.
    pub fn cancel(&self) {
        let _guard = self.inner.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until cancelled, whichever comes first.
    /// Returns `true` if cancelled.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now().checked_add(duration);
        let mut guard = self.inner.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => return false,
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            guard = self
                .inner
                .wake
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What a running step gets from the executor.
#[derive(Debug, Clone)]
pub struct StepContext {
    id: StepId,
    cancel: Cancel,
}

impl StepContext {
    /// A context for running a step outside a [`Dag`] (tests, one-off calls).
    pub fn new(id: StepId, cancel: Cancel) -> Self {
        StepContext { id, cancel }
    }

    pub fn id(&self) -> StepId {
        self.id
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(StepError::cancelled())` once the run is cancelled: `cx.check_cancelled()?;`.
    pub fn check_cancelled(&self) -> Result<(), StepError> {
        if self.is_cancelled() { Err(StepError::cancelled()) } else { Ok(()) }
    }

    /// Sleeps between polls (lease, port, console); returns
    /// `Err(StepError::cancelled())` as soon as the run is cancelled.
    pub fn sleep(&self, duration: Duration) -> Result<(), StepError> {
        if self.cancel.sleep(duration) { Err(StepError::cancelled()) } else { Ok(()) }
    }

    pub fn cancel_token(&self) -> &Cancel {
        &self.cancel
    }
}

/// Progress, delivered to the observer passed to [`Dag::run`].
///
/// `Started` events are emitted by the coordinator (the thread that called
/// `run`), in dispatch order; `Finished` by the thread that ran the step;
/// `Skipped` and `Cancelled` by the coordinator. For one step, `Started`
/// always precedes `Finished`; a dependency's `Finished` always precedes a
/// dependent's `Started`. Every step gets exactly one of `Finished`,
/// `Skipped` or `Cancelled` (a step on a dependency cycle gets a `Finished`
/// with an error and no `Started`).
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        id: StepId,
        description: String,
        address: String,
    },
    Finished {
        id: StepId,
        description: String,
        address: String,
        outcome: Result<StepOutcome, StepError>,
        elapsed: Duration,
    },
    Skipped {
        id: StepId,
        description: String,
        address: String,
        /// The failed step that caused the skip (a transitive dependency).
        because: StepId,
        because_description: String,
    },
    /// The run was cancelled before this step could start.
    Cancelled {
        id: StepId,
        description: String,
        address: String,
    },
}

impl Event {
    pub fn id(&self) -> StepId {
        match self {
            Event::Started { id, .. }
            | Event::Finished { id, .. }
            | Event::Skipped { id, .. }
            | Event::Cancelled { id, .. } => *id,
        }
    }
}

/// A step that finished successfully (`Done` or `AlreadyDone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneStep {
    pub id: StepId,
    pub description: String,
    pub address: String,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedStep {
    pub id: StepId,
    pub description: String,
    pub address: String,
    pub error: StepError,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedStep {
    pub id: StepId,
    pub description: String,
    pub address: String,
    /// The failed step that caused the skip.
    pub because: StepId,
    pub because_description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledStep {
    pub id: StepId,
    pub description: String,
    pub address: String,
}

/// The outcome of a run. Every step appears in exactly one list; each list
/// is sorted by [`StepId`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub done: Vec<DoneStep>,
    /// Steps whose re-check found nothing to do.
    pub already: Vec<DoneStep>,
    pub failed: Vec<FailedStep>,
    pub skipped: Vec<SkippedStep>,
    /// Steps not started because the run was cancelled.
    pub cancelled: Vec<CancelledStep>,
    pub elapsed: Duration,
}

impl Report {
    /// True when every step finished successfully.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.cancelled.is_empty()
    }

    /// The final summary: done and already-done steps, then failures with
    /// their error and hint, skipped steps with the failure that caused them,
    /// steps not started, and a headline last (where a terminal user looks).
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let section = |out: &mut String, title: &str| {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "{title}:");
        };
        if !self.done.is_empty() {
            section(&mut out, "Done");
            for s in &self.done {
                let _ = writeln!(out, "  + {}: {} ({})", s.address, s.description, fmt_duration(s.elapsed));
            }
        }
        if !self.already.is_empty() {
            section(&mut out, "Already in place");
            for s in &self.already {
                let _ = writeln!(out, "  = {}: {}", s.address, s.description);
            }
        }
        if !self.failed.is_empty() {
            section(&mut out, "Failed");
            for s in &self.failed {
                let _ = writeln!(out, "  x {}: {} (after {})", s.address, s.description, fmt_duration(s.elapsed));
                let _ = writeln!(out, "      error: {}", indent(&s.error.message, "             "));
                if let Some(hint) = &s.error.hint {
                    let _ = writeln!(out, "      hint: {}", indent(hint, "            "));
                }
            }
        }
        if !self.skipped.is_empty() {
            section(&mut out, "Skipped (a dependency failed)");
            for s in &self.skipped {
                let _ = writeln!(
                    out,
                    "  - {}: {} (because \"{}\" failed)",
                    s.address, s.description, s.because_description
                );
            }
        }
        if !self.cancelled.is_empty() {
            section(&mut out, "Not started (cancelled)");
            for s in &self.cancelled {
                let _ = writeln!(out, "  - {}: {}", s.address, s.description);
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let mut counts = vec![format!("{} done", self.done.len())];
        if !self.already.is_empty() {
            counts.push(format!("{} already in place", self.already.len()));
        }
        if !self.failed.is_empty() {
            counts.push(format!("{} failed", self.failed.len()));
        }
        if !self.skipped.is_empty() {
            counts.push(format!("{} skipped", self.skipped.len()));
        }
        if !self.cancelled.is_empty() {
            counts.push(format!("{} not started", self.cancelled.len()));
        }
        let interrupted = StepError::cancelled();
        let verdict = if self.ok() {
            "Apply complete"
        } else if self.failed.iter().all(|f| f.error == interrupted)
            && (!self.cancelled.is_empty() || !self.failed.is_empty())
        {
            // Only cancellation stopped it (steps that stopped early return
            // `StepError::cancelled()`).
            "Apply cancelled"
        } else {
            "Apply failed"
        };
        let _ = writeln!(out, "{verdict} after {}: {}.", fmt_duration(self.elapsed), counts.join(", "));
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().collect::<Vec<_>>().join(&format!("\n{prefix}"))
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Steps joined by "runs after" edges.
pub struct Dag<S: Step> {
    steps: Vec<S>,
    /// `deps[s]`: the steps `s` runs after. Duplicates are harmless.
    deps: Vec<Vec<StepId>>,
}

impl<S: Step> Default for Dag<S> {
    fn default() -> Self {
        Dag { steps: Vec::new(), deps: Vec::new() }
    }
}

impl<S: Step> Dag<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, s: S) -> StepId {
        self.steps.push(s);
        self.deps.push(Vec::new());
        self.steps.len() - 1
    }

    /// `step` runs after `on` succeeded.
    ///
    /// # Panics
    /// If either id was not returned by [`Dag::add`] on this DAG (a bug in
    /// the caller, not bad input).
    pub fn depend(&mut self, step: StepId, on: StepId) {
        let n = self.steps.len();
        assert!(step < n && on < n, "Dag::depend({step}, {on}): only {n} steps");
        self.deps[step].push(on);
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Adds every step of `other` with its edges (ids offset): independent
    /// DAGs (one per host) run as one.
    pub fn append(&mut self, other: Dag<S>) {
        let base = self.steps.len();
        self.steps.extend(other.steps);
        self.deps.extend(other.deps.into_iter().map(|d| d.into_iter().map(|x| x + base).collect()));
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn step(&self, id: StepId) -> &S {
        &self.steps[id]
    }

    /// The steps `id` runs after, as added (duplicates included).
    pub fn deps(&self, id: StepId) -> &[StepId] {
        &self.deps[id]
    }

    /// Checks acyclicity. On error, returns the descriptions of the steps on
    /// one cycle — the shortest through the lowest-numbered step on any
    /// cycle — in order: each step depends on the next, and the last on the
    /// first. A step depending on itself is a cycle of one.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let Some(component) = cyclic_components(&self.deps).into_iter().next() else {
            return Ok(());
        };
        let cycle = shortest_cycle(&self.deps, &component);
        Err(cycle.into_iter().map(|id| describe(&self.steps[id], id)).collect())
    }

    /// Runs every step; see the module documentation for the guarantees.
    /// `observer` is called from the coordinator and worker threads.
    pub fn run(&self, parallelism: usize, observer: &(dyn Fn(Event) + Sync)) -> Report {
        self.run_with_cancel(parallelism, &Cancel::new(), observer)
    }

    /// [`Dag::run`] with a cancellation flag the caller can set (Ctrl-C).
    pub fn run_with_cancel(
        &self,
        parallelism: usize,
        cancel: &Cancel,
        observer: &(dyn Fn(Event) + Sync),
    ) -> Report {
        let started = Instant::now();
        let mut co = Coordinator::new(self, observer);
        co.fail_cycles();

        let non_wait = co.is_wait.iter().filter(|w| !**w).count();
        // `parallelism` slots per pool; workers for all of them.
        let per_pool = parallelism.max(1);
        let pool: Vec<usize> = self.steps.iter().map(|s| catch_unwind(AssertUnwindSafe(|| s.pool())).unwrap_or(0)).collect();
        let pools: std::collections::BTreeSet<usize> = pool.iter().zip(&co.is_wait).filter(|(_, w)| !**w).map(|(p, _)| *p).collect();
        let want_workers = per_pool.saturating_mul(pools.len().max(1)).min(non_wait);
        let mut busy: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();

        thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<Completion>();
            let mut workers: Vec<mpsc::Sender<(StepId, String)>> = Vec::with_capacity(want_workers);
            let mut spawn_error = None;
            for w in 0..want_workers {
                let (job_tx, job_rx) = mpsc::channel::<(StepId, String)>();
                let done_tx = done_tx.clone();
                let spawned = thread::Builder::new().name(format!("vf-apply-{w}")).spawn_scoped(scope, move || {
                    for (id, description) in job_rx {
                        let mut c = execute_guarded(&self.steps[id], id, description, cancel, observer);
                        c.worker = Some(w);
                        if done_tx.send(c).is_err() {
                            break;
                        }
                    }
                });
                match spawned {
                    Ok(_) => workers.push(job_tx),
                    Err(e) => {
                        tracing::warn!("could only start {w} of {want_workers} apply workers: {e}");
                        spawn_error = Some(e.to_string());
                        break;
                    }
                }
            }
            let mut idle: Vec<usize> = (0..workers.len()).rev().collect();
            let mut in_flight = 0usize;
            let mut batch: Vec<StepId> = co.take_roots();

            loop {
                // Newly ready steps, ascending: waits start at once on their
                // own thread, the others queue for a slot.
                batch.sort_unstable();
                for id in batch.drain(..) {
                    if !co.is_wait[id] {
                        if workers.is_empty() {
                            let why = spawn_error.as_deref().unwrap_or("unknown error");
                            co.fail_unrun(id, format!("could not start a worker thread: {why}"));
                        } else {
                            co.ready.push(Reverse(id));
                        }
                        continue;
                    }
                    if cancel.is_cancelled() {
                        continue; // stays Ready; reported as cancelled below
                    }
                    let description = co.emit_started(id);
                    let done_tx = done_tx.clone();
                    let step = &self.steps[id];
                    let for_thread = description.clone();
                    let spawned = thread::Builder::new()
                        .name(format!("vf-wait-{id}"))
                        .spawn_scoped(scope, move || {
                            let _ = done_tx.send(execute_guarded(step, id, for_thread, cancel, observer));
                        });
                    match spawned {
                        Ok(_) => {
                            co.state[id] = State::Running;
                            in_flight += 1;
                        }
                        Err(e) => {
                            let c = Completion {
                                id,
                                worker: None,
                                description,
                                outcome: Err(StepError::new(format!("could not start a thread for a wait: {e}"))),
                                elapsed: Duration::ZERO,
                            };
                            emit(observer, finished_event(step, &c));
                            co.state[id] = State::Running;
                            co.complete(c, &mut Vec::new()); // a failure makes nothing ready
                        }
                    }
                }
                if !cancel.is_cancelled() {
                    // Steps of a pool with every slot taken wait for one.
                    let mut full = Vec::new();
                    while let Some(&w) = idle.last() {
                        let Some(Reverse(id)) = co.ready.pop() else { break };
                        let taken = busy.entry(pool[id]).or_insert(0);
                        if *taken >= per_pool {
                            full.push(Reverse(id));
                            continue;
                        }
                        *taken += 1;
                        let description = co.emit_started(id);
                        co.state[id] = State::Running;
                        if let Err(mpsc::SendError((id, description))) = workers[w].send((id, description)) {
                            // The worker is gone (cannot happen: workers never unwind).
                            let c = Completion {
                                id,
                                worker: None,
                                description,
                                outcome: Err(StepError::new("internal error: the worker thread is gone")),
                                elapsed: Duration::ZERO,
                            };
                            emit(observer, finished_event(&self.steps[id], &c));
                            co.complete(c, &mut Vec::new()); // a failure makes nothing ready
                            if let Some(n) = busy.get_mut(&pool[id]) {
                                *n = n.saturating_sub(1);
                            }
                            idle.pop();
                            continue;
                        }
                        idle.pop();
                        in_flight += 1;
                    }
                    co.ready.extend(full);
                }
                if in_flight == 0 {
                    break;
                }
                // We hold `done_tx`, so this cannot disconnect.
                let Ok(c) = done_rx.recv() else { break };
                in_flight -= 1;
                if let Some(w) = c.worker {
                    idle.push(w);
                    if let Some(n) = busy.get_mut(&pool[c.id]) {
                        *n = n.saturating_sub(1);
                    }
                }
                co.complete(c, &mut batch);
            }
            drop(workers); // closes the job channels: workers exit, the scope joins them
        });

        co.finish(cancel.is_cancelled());
        co.report.elapsed = started.elapsed();
        co.report
    }
}

/// The description, with a panic in `describe` turned into a placeholder.
fn describe<S: Step>(step: &S, id: StepId) -> String {
    catch_unwind(AssertUnwindSafe(|| step.describe())).unwrap_or_else(|_| format!("step #{id}"))
}

/// Calls the observer; a panic in it is logged, never propagated.
fn emit(observer: &(dyn Fn(Event) + Sync), event: Event) {
    let id = event.id();
    if catch_unwind(AssertUnwindSafe(|| observer(event))).is_err() {
        tracing::error!(step = id, "the apply progress observer panicked; continuing");
    }
}

fn finished_event<S: Step>(step: &S, c: &Completion) -> Event {
    Event::Finished {
        id: c.id,
        description: c.description.clone(),
        address: step.address().to_string(),
        outcome: c.outcome.clone(),
        elapsed: c.elapsed,
    }
}

/// What a worker or wait thread sends back.
struct Completion {
    id: StepId,
    /// The worker whose slot this frees; `None` for waits.
    worker: Option<usize>,
    description: String,
    outcome: Result<StepOutcome, StepError>,
    elapsed: Duration,
}

/// [`execute`], and if anything outside the step's `run` panics (its
/// `address`), still a completion: the coordinator counts on one per
/// dispatched step and would otherwise wait forever.
fn execute_guarded<S: Step>(
    step: &S,
    id: StepId,
    description: String,
    cancel: &Cancel,
    observer: &(dyn Fn(Event) + Sync),
) -> Completion {
    let fallback = description.clone();
    catch_unwind(AssertUnwindSafe(|| execute(step, id, description, cancel, observer))).unwrap_or_else(|p| {
        Completion {
            id,
            worker: None,
            description: fallback,
            outcome: Err(StepError::panicked(&*p)),
            elapsed: Duration::ZERO,
        }
    })
}

/// Runs one step on the current thread and emits its `Finished` event.
fn execute<S: Step>(
    step: &S,
    id: StepId,
    description: String,
    cancel: &Cancel,
    observer: &(dyn Fn(Event) + Sync),
) -> Completion {
    let cx = StepContext::new(id, cancel.clone());
    tracing::debug!(step = id, %description, "step started");
    let t0 = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| step.run(&cx))).unwrap_or_else(|p| Err(StepError::panicked(&*p)));
    let elapsed = t0.elapsed();
    tracing::debug!(step = id, %description, ok = outcome.is_ok(), ?elapsed, "step finished");
    let c = Completion { id, worker: None, description, outcome, elapsed };
    emit(observer, finished_event(step, &c));
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Some dependency has not succeeded yet.
    Pending,
    /// All dependencies succeeded; queued (or, for a wait, not started
    /// because of cancellation).
    Ready,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

/// Single-threaded bookkeeping of a run.
struct Coordinator<'a, S: Step> {
    dag: &'a Dag<S>,
    observer: &'a (dyn Fn(Event) + Sync),
    is_wait: Vec<bool>,
    /// Dependents in CSR form: `dependents[offsets[s]..offsets[s + 1]]`.
    offsets: Vec<usize>,
    dependents: Vec<StepId>,
    /// Dependencies (edges, duplicates counted) not yet succeeded.
    remaining: Vec<usize>,
    state: Vec<State>,
    ready: BinaryHeap<Reverse<StepId>>,
    report: Report,
}

impl<'a, S: Step> Coordinator<'a, S> {
    fn new(dag: &'a Dag<S>, observer: &'a (dyn Fn(Event) + Sync)) -> Self {
        let n = dag.steps.len();
        let is_wait = dag
            .steps
            .iter()
            .map(|s| catch_unwind(AssertUnwindSafe(|| s.is_wait())).unwrap_or(false))
            .collect();
        let mut offsets = vec![0usize; n + 1];
        for deps in &dag.deps {
            for &d in deps {
                offsets[d + 1] += 1;
            }
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut dependents = vec![0; offsets[n]];
        for (s, deps) in dag.deps.iter().enumerate() {
            for &d in deps {
                dependents[fill[d]] = s;
                fill[d] += 1;
            }
        }
        Coordinator {
            dag,
            observer,
            is_wait,
            offsets,
            dependents,
            remaining: dag.deps.iter().map(Vec::len).collect(),
            state: vec![State::Pending; n],
            ready: BinaryHeap::new(),
            report: Report::default(),
        }
    }

    fn dependents_of(&self, id: StepId) -> &[StepId] {
        &self.dependents[self.offsets[id]..self.offsets[id + 1]]
    }

    fn address(&self, id: StepId) -> String {
        self.dag.steps[id].address().to_string()
    }

    /// Steps with no dependencies, marked ready.
    fn take_roots(&mut self) -> Vec<StepId> {
        let mut roots = Vec::new();
        for id in 0..self.state.len() {
            if self.remaining[id] == 0 && self.state[id] == State::Pending {
                self.state[id] = State::Ready;
                roots.push(id);
            }
        }
        roots
    }

    /// Emits `Started` and returns the description (computed once per step).
    fn emit_started(&self, id: StepId) -> String {
        let step = &self.dag.steps[id];
        let description = describe(step, id);
        emit(
            self.observer,
            Event::Started { id, description: description.clone(), address: step.address().to_string() },
        );
        description
    }

    /// Fails the steps on dependency cycles (they can never become ready)
    /// and skips their dependents, so `run` on a cyclic graph terminates.
    fn fail_cycles(&mut self) {
        // Kahn's count first: the common, acyclic case costs O(V + E) and
        // no SCC computation.
        let n = self.state.len();
        let mut left = self.remaining.clone();
        let mut stack: Vec<StepId> = (0..n).filter(|&i| left[i] == 0).collect();
        let mut seen = 0;
        while let Some(s) = stack.pop() {
            seen += 1;
            for &d in &self.dependents[self.offsets[s]..self.offsets[s + 1]] {
                left[d] -= 1;
                if left[d] == 0 {
                    stack.push(d);
                }
            }
        }
        if seen == n {
            return;
        }
        // Fail every step on every cycle first, then skip their dependents:
        // skipping first would skip the later members of the same cycle.
        let mut failed = Vec::new();
        for component in cyclic_components(&self.dag.deps) {
            let cycle = shortest_cycle(&self.dag.deps, &component);
            let mut names: Vec<String> = cycle.iter().map(|&i| describe(&self.dag.steps[i], i)).collect();
            names.push(names[0].clone());
            let error = StepError::new(format!("dependency cycle: {}", names.join(" -> ")))
                .with_hint("this is a bug in how apply joined its steps; please report it");
            for id in component {
                let c = Completion {
                    id,
                    worker: None,
                    description: describe(&self.dag.steps[id], id),
                    outcome: Err(error.clone()),
                    elapsed: Duration::ZERO,
                };
                emit(self.observer, finished_event(&self.dag.steps[id], &c));
                self.state[id] = State::Failed;
                self.report.failed.push(FailedStep {
                    id,
                    description: c.description.clone(),
                    address: self.address(id),
                    error: error.clone(),
                    elapsed: Duration::ZERO,
                });
                failed.push((id, c.description));
            }
        }
        for (id, description) in failed {
            self.skip_dependents(id, &description);
        }
    }

    /// Records a step that could not even be started.
    fn fail_unrun(&mut self, id: StepId, message: String) {
        let step = &self.dag.steps[id];
        let c = Completion {
            id,
            worker: None,
            description: describe(step, id),
            outcome: Err(StepError::new(message)),
            elapsed: Duration::ZERO,
        };
        emit(self.observer, finished_event(step, &c));
        self.state[id] = State::Running;
        self.complete(c, &mut Vec::new());
    }

    /// Records a finished step; pushes newly ready dependents to `ready`, or
    /// skips every transitive dependent of a failure.
    fn complete(&mut self, c: Completion, ready: &mut Vec<StepId>) {
        let id = c.id;
        debug_assert_eq!(self.state[id], State::Running);
        let address = self.address(id);
        match c.outcome {
            Ok(outcome) => {
                self.state[id] = State::Succeeded;
                let rec = DoneStep { id, description: c.description, address, elapsed: c.elapsed };
                match outcome {
                    StepOutcome::Done => self.report.done.push(rec),
                    StepOutcome::AlreadyDone => self.report.already.push(rec),
                }
                for i in self.offsets[id]..self.offsets[id + 1] {
                    let d = self.dependents[i];
                    self.remaining[d] -= 1;
                    if self.remaining[d] == 0 && self.state[d] == State::Pending {
                        self.state[d] = State::Ready;
                        ready.push(d);
                    }
                }
            }
            Err(error) => {
                self.state[id] = State::Failed;
                self.skip_dependents(id, &c.description);
                self.report.failed.push(FailedStep {
                    id,
                    description: c.description,
                    address,
                    error,
                    elapsed: c.elapsed,
                });
            }
        }
    }

    /// Skips every pending transitive dependent of `failed`. Each step is
    /// skipped (and expanded) at most once per run: O(V + E) in total.
    fn skip_dependents(&mut self, failed: StepId, failed_description: &str) {
        let mut stack: Vec<StepId> = self.dependents_of(failed).to_vec();
        while let Some(d) = stack.pop() {
            // A dependent of an unsucceeded step can only be Pending (or
            // already Skipped/Failed through another path).
            if self.state[d] != State::Pending {
                continue;
            }
            self.state[d] = State::Skipped;
            let step = &self.dag.steps[d];
            let description = describe(step, d);
            let address = step.address().to_string();
            emit(
                self.observer,
                Event::Skipped {
                    id: d,
                    description: description.clone(),
                    address: address.clone(),
                    because: failed,
                    because_description: failed_description.to_string(),
                },
            );
            self.report.skipped.push(SkippedStep {
                id: d,
                description,
                address,
                because: failed,
                because_description: failed_description.to_string(),
            });
            stack.extend_from_slice(self.dependents_of(d));
        }
    }

    /// After the last step returned: whatever never started was cancelled.
    fn finish(&mut self, cancelled: bool) {
        for id in 0..self.state.len() {
            if !matches!(self.state[id], State::Pending | State::Ready) {
                continue;
            }
            let step = &self.dag.steps[id];
            let description = describe(step, id);
            let address = step.address().to_string();
            if cancelled {
                self.state[id] = State::Cancelled;
                emit(
                    self.observer,
                    Event::Cancelled { id, description: description.clone(), address: address.clone() },
                );
                self.report.cancelled.push(CancelledStep { id, description, address });
            } else {
                // Unreachable: without cancellation every step is either run,
                // skipped behind a failure, or on a cycle.
                debug_assert!(false, "step {id} ({description}) was never scheduled");
                self.state[id] = State::Failed;
                let error = StepError::new("internal error: the step was never scheduled");
                emit(
                    self.observer,
                    Event::Finished {
                        id,
                        description: description.clone(),
                        address: address.clone(),
                        outcome: Err(error.clone()),
                        elapsed: Duration::ZERO,
                    },
                );
                self.report.failed.push(FailedStep { id, description, address, error, elapsed: Duration::ZERO });
            }
        }
        self.report.done.sort_by_key(|s| s.id);
        self.report.already.sort_by_key(|s| s.id);
        self.report.failed.sort_by_key(|s| s.id);
        self.report.skipped.sort_by_key(|s| s.id);
        self.report.cancelled.sort_by_key(|s| s.id);
    }
}

/// The strongly connected components that contain a cycle (more than one
/// step, or a step depending on itself), each sorted, ordered by their
/// lowest id. Iterative Tarjan over the `deps` edges: O(V + E), no
/// recursion (chains of 10,000 steps must not overflow the stack).
fn cyclic_components(deps: &[Vec<StepId>]) -> Vec<Vec<StepId>> {
    const UNSEEN: usize = usize::MAX;
    let n = deps.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<StepId> = Vec::new();
    let mut calls: Vec<(StepId, usize)> = Vec::new();
    let mut next = 0usize;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some(&(v, edge)) = calls.last() {
            if let Some(&w) = deps[v].get(edge) {
                if let Some(top) = calls.last_mut() {
                    top.1 += 1;
                }
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(u, _)) = calls.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 || deps[v].contains(&v) {
                    component.sort_unstable();
                    out.push(component);
                }
            }
        }
    }
    out.sort_unstable_by_key(|c| c[0]);
    out
}

/// The shortest cycle through the lowest id of a cyclic component, as ids
/// where each depends on the next and the last on the first. BFS along
/// `deps` edges inside the component.
fn shortest_cycle(deps: &[Vec<StepId>], component: &[StepId]) -> Vec<StepId> {
    let start = component[0];
    if deps[start].contains(&start) {
        return vec![start];
    }
    let inside = |id: StepId| component.binary_search(&id).is_ok();
    let mut parent: std::collections::HashMap<StepId, StepId> = std::collections::HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &deps[v] {
            if w == start {
                let mut path = vec![v];
                let mut cur = v;
                while cur != start {
                    cur = parent[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if inside(w) && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    // Unreachable for a strongly connected component; fall back to listing it.
    component.to_vec()
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    type Body = Box<dyn Fn(&StepContext) -> Result<StepOutcome, StepError> + Send + Sync>;

    /// Logical clock and per-step records shared by the fake steps.
    struct Probe {
        clock: AtomicUsize,
        /// Clock value when the step's body started / ended (0: never).
        start: Vec<AtomicUsize>,
        end: Vec<AtomicUsize>,
        runs: Vec<AtomicUsize>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Probe {
        fn new(n: usize) -> Arc<Self> {
            let zeros = || (0..n).map(|_| AtomicUsize::new(0)).collect();
            Arc::new(Probe {
                clock: AtomicUsize::new(0),
                start: zeros(),
                end: zeros(),
                runs: zeros(),
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
            })
        }
        fn tick(&self) -> usize {
            self.clock.fetch_add(1, Ordering::SeqCst) + 1
        }
        fn start(&self, i: usize) -> usize {
            self.start[i].load(Ordering::SeqCst)
        }
        fn end(&self, i: usize) -> usize {
            self.end[i].load(Ordering::SeqCst)
        }
        fn runs(&self, i: usize) -> usize {
            self.runs[i].load(Ordering::SeqCst)
        }
        fn max_running(&self) -> usize {
            self.max_running.load(Ordering::SeqCst)
        }
    }

    struct Fake {
        index: usize,
        name: String,
        address: String,
        wait: bool,
        probe: Arc<Probe>,
        body: Body,
    }

    /// Records the end and releases the concurrency count even on panic.
    struct EndGuard<'a>(&'a Fake);
    impl Drop for EndGuard<'_> {
        fn drop(&mut self) {
            let f = self.0;
            f.probe.end[f.index].store(f.probe.tick(), Ordering::SeqCst);
            if !f.wait {
                f.probe.running.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    impl Step for Fake {
        fn describe(&self) -> String {
            self.name.clone()
        }
        fn address(&self) -> &str {
            &self.address
        }
        fn is_wait(&self) -> bool {
            self.wait
        }
        fn run(&self, cx: &StepContext) -> Result<StepOutcome, StepError> {
            assert_eq!(cx.id(), self.index);
            let p = &self.probe;
            p.runs[self.index].fetch_add(1, Ordering::SeqCst);
            if !self.wait {
                let now = p.running.fetch_add(1, Ordering::SeqCst) + 1;
                p.max_running.fetch_max(now, Ordering::SeqCst);
            }
            p.start[self.index].store(p.tick(), Ordering::SeqCst);
            let _guard = EndGuard(self);
            (self.body)(cx)
        }
    }

    struct Fixture {
        dag: Dag<Fake>,
        probe: Arc<Probe>,
    }

    impl Fixture {
        fn new(capacity: usize) -> Self {
            Fixture { dag: Dag::new(), probe: Probe::new(capacity) }
        }
        fn add(&mut self, name: &str, body: Body) -> StepId {
            self.push(name, false, body)
        }
        fn add_wait(&mut self, name: &str, body: Body) -> StepId {
            self.push(name, true, body)
        }
        fn push(&mut self, name: &str, wait: bool, body: Body) -> StepId {
            let index = self.dag.len();
            self.dag.add(Fake {
                index,
                name: name.to_string(),
                address: format!("test.{name}"),
                wait,
                probe: self.probe.clone(),
                body,
            })
        }
        /// Runs and returns the report and every event in emission order.
        fn run(&self, parallelism: usize) -> (Report, Vec<Event>) {
            let events = Mutex::new(Vec::new());
            let report = self.dag.run(parallelism, &|e| events.lock().unwrap().push(e));
            (report, events.into_inner().unwrap())
        }
        /// Every dependency ended before its dependent started.
        fn assert_order(&self) {
            for s in 0..self.dag.len() {
                if self.probe.runs(s) == 0 {
                    continue;
                }
                for &d in self.dag.deps(s) {
                    assert_eq!(self.probe.runs(d), 1, "dependency {d} of {s} did not run");
                    assert!(
                        self.probe.end(d) < self.probe.start(s),
                        "step {s} started ({}) before its dependency {d} ended ({})",
                        self.probe.start(s),
                        self.probe.end(d)
                    );
                }
            }
        }
    }

    fn ok() -> Body {
        Box::new(|_| Ok(StepOutcome::Done))
    }
    fn already() -> Body {
        Box::new(|_| Ok(StepOutcome::AlreadyDone))
    }
    fn sleep(ms: u64) -> Body {
        Box::new(move |_| {
            thread::sleep(Duration::from_millis(ms));
            Ok(StepOutcome::Done)
        })
    }
    fn fail(message: &'static str) -> Body {
        Box::new(move |_| Err(StepError::new(message)))
    }

    fn ids<T>(items: &[T], id: impl Fn(&T) -> StepId) -> Vec<StepId> {
        items.iter().map(id).collect()
    }

    /// splitmix64: deterministic pseudo-random numbers without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random DAG whose topological order is a random permutation of the
    /// ids (so id order and dependency order disagree), with up to `max_deps`
    /// dependencies per step.
    fn random_dag(f: &mut Fixture, n: usize, max_deps: usize, seed: u64, body: impl Fn(&mut Rng) -> (bool, Body)) {
        let mut rng = Rng(seed);
        let mut perm: Vec<StepId> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        for i in 0..n {
            let (wait, b) = body(&mut rng);
            f.push(&format!("s{i}"), wait, b);
        }
        for pos in 1..n {
            for _ in 0..rng.below(max_deps + 1) {
                let on = perm[rng.below(pos)];
                f.dag.depend(perm[pos], on);
            }
        }
    }

    #[test]
    fn dependency_order_is_respected() {
        let mut f = Fixture::new(60);
        random_dag(&mut f, 60, 3, 7, |rng| {
            let ms = rng.below(4) as u64;
            (false, sleep(ms))
        });
        assert_eq!(f.dag.validate(), Ok(()));
        let (report, events) = f.run(4);
        assert!(report.ok(), "{}", report.render());
        assert_eq!(report.done.len(), 60);
        f.assert_order();
        for i in 0..60 {
            assert_eq!(f.probe.runs(i), 1);
        }
        // Event-level order too: every dependency's Finished precedes the
        // dependent's Started.
        let pos = |want: fn(&Event) -> bool, id: StepId| {
            events.iter().position(|e| e.id() == id && want(e)).unwrap()
        };
        for s in 0..60 {
            for &d in f.dag.deps(s) {
                assert!(
                    pos(|e| matches!(e, Event::Finished { .. }), d) < pos(|e| matches!(e, Event::Started { .. }), s)
                );
            }
        }
    }

    #[test]
    fn parallelism_bound_is_reached_and_never_exceeded() {
        for (parallelism, expected) in [(4, 4), (1, 1), (0, 1)] {
            let mut f = Fixture::new(24);
            for i in 0..24 {
                f.add(&format!("s{i}"), sleep(8));
            }
            let (report, _) = f.run(parallelism);
            assert!(report.ok());
            assert_eq!(f.probe.max_running(), expected, "parallelism {parallelism}");
        }
    }

    #[test]
    fn each_pool_has_its_own_slots() {
        // Two pools (hosts) of 12 steps, parallelism 2: 4 at once overall,
        // never 3 of one pool.
        struct Pooled(Fake, usize);
        impl Step for Pooled {
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn address(&self) -> &str {
                self.0.address()
            }
            fn pool(&self) -> usize {
                self.1
            }
            fn run(&self, cx: &StepContext) -> Result<StepOutcome, StepError> {
                let per = &PER_POOL[self.1];
                let now = per.fetch_add(1, Ordering::SeqCst) + 1;
                MAX_PER_POOL.fetch_max(now, Ordering::SeqCst);
                let r = self.0.run(cx);
                per.fetch_sub(1, Ordering::SeqCst);
                r
            }
        }
        static PER_POOL: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
        static MAX_PER_POOL: AtomicUsize = AtomicUsize::new(0);
        let probe = Probe::new(24);
        let mut dag = Dag::new();
        for i in 0..24 {
            dag.add(Pooled(Fake { index: i, name: format!("s{i}"), address: format!("test.s{i}"), wait: false, probe: probe.clone(), body: sleep(8) }, i % 2));
        }
        let report = dag.run(2, &|_| {});
        assert!(report.ok());
        assert_eq!(probe.max_running(), 4, "both pools' slots are used at once");
        assert_eq!(MAX_PER_POOL.load(Ordering::SeqCst), 2, "no pool runs more than its slots");
    }

    #[test]
    fn waits_hold_no_slot() {
        // Parallelism 1: a long wait (id 0, so it is ready first) and five
        // short independent steps. The wait only returns once the five have
        // finished, so if it held the only slot it would time out.
        let mut f = Fixture::new(6);
        let finished = Arc::new(AtomicUsize::new(0));
        let seen = finished.clone();
        f.add_wait(
            "wait for lease",
            Box::new(move |cx| {
                let deadline = Instant::now() + Duration::from_secs(5);
                while seen.load(Ordering::SeqCst) < 5 {
                    if Instant::now() > deadline {
                        return Err(StepError::new("timed out: the short steps never ran"));
                    }
                    cx.sleep(Duration::from_millis(1))?;
                }
                Ok(StepOutcome::Done)
            }),
        );
        for i in 0..5 {
            let finished = finished.clone();
            f.add(
                &format!("short{i}"),
                Box::new(move |_| {
                    thread::sleep(Duration::from_millis(2));
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(StepOutcome::Done)
                }),
            );
        }
        let (report, _) = f.run(1);
        assert!(report.ok(), "{}", report.render());
        assert_eq!(f.probe.max_running(), 1);
        // The wait was running while the short steps ran (it returned only
        // after they finished, and report.ok() says it did not time out);
        // when its thread got the CPU relative to them is up to the OS, so
        // no assertion on its start time (it flaked on a loaded CI host).
        for i in 1..=5 {
            assert!(f.probe.end(i) < f.probe.end(0), "the wait finished before short{i}");
        }
    }

    #[test]
    fn waits_run_together_beyond_the_slot_limit() {
        // Five waits that only return once all five are running at once.
        let mut f = Fixture::new(6);
        let arrived = Arc::new(AtomicUsize::new(0));
        for i in 0..5 {
            let arrived = arrived.clone();
            f.add_wait(
                &format!("wait{i}"),
                Box::new(move |cx| {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while arrived.load(Ordering::SeqCst) < 5 {
                        if Instant::now() > deadline {
                            return Err(StepError::new("the waits did not run concurrently"));
                        }
                        cx.sleep(Duration::from_millis(1))?;
                    }
                    Ok(StepOutcome::Done)
                }),
            );
        }
        let after = f.add("after the waits", ok());
        for i in 0..5 {
            f.dag.depend(after, i);
        }
        let (report, _) = f.run(1);
        assert!(report.ok(), "{}", report.render());
        f.assert_order();
    }

    #[test]
    fn failure_skips_exactly_the_transitive_dependents() {
        let mut f = Fixture::new(8);
        let a = f.add("a", ok());
        let b = f.add("b", fail("b broke"));
        let c = f.add("c", ok());
        let d = f.add("d", ok());
        let e = f.add("e", ok());
        let g = f.add("g (independent, slow)", sleep(40));
        let h = f.add("h", ok());
        let i = f.add("i", ok());
        f.dag.depend(b, a);
        f.dag.depend(c, b);
        f.dag.depend(d, c);
        f.dag.depend(e, b);
        f.dag.depend(e, a);
        f.dag.depend(h, a);
        f.dag.depend(h, g);
        f.dag.depend(i, h);
        f.dag.depend(i, d);
        let (report, events) = f.run(4);
        assert!(!report.ok());
        assert_eq!(ids(&report.done, |s| s.id), vec![a, g, h]);
        assert_eq!(ids(&report.failed, |s| s.id), vec![b]);
        assert_eq!(report.failed[0].error.message, "b broke");
        assert_eq!(report.failed[0].address, "test.b");
        assert_eq!(ids(&report.skipped, |s| s.id), vec![c, d, e, i]);
        for s in &report.skipped {
            assert_eq!((s.because, s.because_description.as_str()), (b, "b"));
            assert_eq!(f.probe.runs(s.id), 0, "skipped step {} ran", s.id);
            assert!(!events.iter().any(|e| e.id() == s.id && matches!(e, Event::Started { .. })));
        }
        let skipped_events: Vec<(StepId, StepId)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Skipped { id, because, .. } => Some((*id, *because)),
                _ => None,
            })
            .collect();
        let mut sorted = skipped_events.clone();
        sorted.sort();
        assert_eq!(sorted, vec![(c, b), (d, b), (e, b), (i, b)]);
        // The independent slow branch finished after the failure.
        assert!(f.probe.end(g) > f.probe.end(b));
        f.assert_order();
    }

    #[test]
    fn events_are_started_then_finished_and_one_terminal_event_per_step() {
        let mut f = Fixture::new(5);
        let a = f.add("a", sleep(1));
        let b = f.add("b", fail("no"));
        let c = f.add("c", ok());
        let w = f.add_wait("w", sleep(3));
        let d = f.add("d", already());
        f.dag.depend(c, b);
        f.dag.depend(d, w);
        f.dag.depend(d, a);
        let (report, events) = f.run(2);
        assert_eq!(ids(&report.already, |s| s.id), vec![d]);
        for id in 0..5 {
            let mine: Vec<&Event> = events.iter().filter(|e| e.id() == id).collect();
            match mine.as_slice() {
                [Event::Started { .. }, Event::Finished { .. }] => assert_ne!(id, c),
                [Event::Skipped { because, .. }] => assert_eq!((id, *because), (c, b)),
                other => panic!("step {id}: unexpected events {other:?}"),
            }
        }
        let Some(Event::Finished { outcome, address, .. }) =
            events.iter().find(|e| e.id() == d && matches!(e, Event::Finished { .. }))
        else {
            panic!("no Finished for d")
        };
        assert_eq!((outcome, address.as_str()), (&Ok(StepOutcome::AlreadyDone), "test.d"));
    }

    #[test]
    fn diamond_runs_each_step_once() {
        let mut f = Fixture::new(4);
        let top = f.add("top", sleep(1));
        let left = f.add("left", sleep(3));
        let right = f.add("right", sleep(1));
        let bottom = f.add("bottom", ok());
        f.dag.depend(left, top);
        f.dag.depend(right, top);
        f.dag.depend(bottom, left);
        f.dag.depend(bottom, right);
        f.dag.depend(bottom, left); // duplicate edges are harmless
        let (report, _) = f.run(4);
        assert!(report.ok(), "{}", report.render());
        assert_eq!(report.done.len(), 4);
        for i in 0..4 {
            assert_eq!(f.probe.runs(i), 1);
        }
        f.assert_order();
        assert!(f.probe.end(left) < f.probe.start(bottom) && f.probe.end(right) < f.probe.start(bottom));
    }

    #[test]
    fn diamond_with_a_failed_side_skips_the_bottom_once() {
        let mut f = Fixture::new(4);
        let top = f.add("top", ok());
        let left = f.add("left", fail("left broke"));
        let right = f.add("right", sleep(5));
        let bottom = f.add("bottom", ok());
        f.dag.depend(left, top);
        f.dag.depend(right, top);
        f.dag.depend(bottom, left);
        f.dag.depend(bottom, right);
        let (report, events) = f.run(4);
        assert_eq!(ids(&report.done, |s| s.id), vec![top, right]);
        assert_eq!(ids(&report.failed, |s| s.id), vec![left]);
        assert_eq!(ids(&report.skipped, |s| s.id), vec![bottom]);
        assert_eq!(report.skipped[0].because, left);
        assert_eq!(events.iter().filter(|e| matches!(e, Event::Skipped { .. })).count(), 1);
    }

    #[test]
    fn validate_reports_the_cycle_in_dependency_order() {
        let mut f = Fixture::new(6);
        for name in ["ok", "x", "y", "z", "after", "shortcut"] {
            f.add(name, ok());
        }
        assert_eq!(f.dag.validate(), Ok(()));
        // x -> y -> z -> x (each depends on the next), plus a step depending
        // on the cycle and a longer way round that must not be reported.
        f.dag.depend(1, 2);
        f.dag.depend(2, 3);
        f.dag.depend(3, 1);
        f.dag.depend(4, 1);
        f.dag.depend(2, 5);
        f.dag.depend(5, 3);
        assert_eq!(f.dag.validate(), Err(vec!["x".to_string(), "y".to_string(), "z".to_string()]));

        let mut g = Fixture::new(2);
        g.add("fine", ok());
        let me = g.add("me", ok());
        g.dag.depend(me, me);
        assert_eq!(g.dag.validate(), Err(vec!["me".to_string()]));
    }

    #[test]
    fn validate_handles_a_long_chain_without_recursion() {
        let mut f = Fixture::new(50_000);
        for i in 0..50_000 {
            f.add(&format!("s{i}"), ok());
            if i > 0 {
                f.dag.depend(i, i - 1);
            }
        }
        assert_eq!(f.dag.validate(), Ok(()));
        f.dag.depend(0, 49_999);
        assert_eq!(f.dag.validate().unwrap_err().len(), 50_000);
    }

    #[test]
    fn run_on_a_cyclic_graph_terminates() {
        let mut f = Fixture::new(5);
        let a = f.add("a", ok());
        let b = f.add("b", ok());
        let behind = f.add("behind the cycle", ok());
        let free = f.add("independent", ok());
        let me = f.add("self", ok());
        f.dag.depend(a, b);
        f.dag.depend(b, a);
        f.dag.depend(behind, b);
        f.dag.depend(me, me);
        let (report, _) = f.run(2);
        assert_eq!(ids(&report.done, |s| s.id), vec![free]);
        assert_eq!(ids(&report.failed, |s| s.id), vec![a, b, me]);
        assert_eq!(report.failed[0].error.message, "dependency cycle: a -> b -> a");
        assert_eq!(report.failed[2].error.message, "dependency cycle: self -> self");
        assert_eq!(ids(&report.skipped, |s| s.id), vec![behind]);
        for id in [a, b, behind, me] {
            assert_eq!(f.probe.runs(id), 0);
        }
    }

    #[test]
    fn a_panic_is_a_failure_of_that_step() {
        let mut f = Fixture::new(4);
        let boom = f.add("boom", Box::new(|_| panic!("kaboom {}", 42)));
        let after = f.add("after boom", ok());
        let free = f.add("independent", sleep(2));
        let wait_boom = f.add_wait("wait boom", Box::new(|_| panic!("static payload")));
        f.dag.depend(after, boom);
        let (report, _) = f.run(1);
        assert_eq!(ids(&report.done, |s| s.id), vec![free]);
        assert_eq!(ids(&report.failed, |s| s.id), vec![boom, wait_boom]);
        assert!(report.failed[0].error.message.contains("panicked: kaboom 42"), "{:?}", report.failed[0]);
        assert!(report.failed[1].error.message.contains("static payload"));
        assert_eq!(ids(&report.skipped, |s| s.id), vec![after]);
        // The worker survived the panic: with parallelism 1 it ran the next step.
        assert_eq!(f.probe.max_running(), 1);
    }

    #[test]
    fn ready_steps_start_in_ascending_id_order() {
        // Parallelism 1: the run order is exactly ascending among ready steps.
        let mut f = Fixture::new(10);
        for i in 0..10 {
            f.add(&format!("s{i}"), ok());
        }
        f.dag.depend(0, 5);
        f.dag.depend(2, 7);
        let (report, events) = f.run(1);
        assert!(report.ok());
        let started: Vec<StepId> = events
            .iter()
            .filter(|e| matches!(e, Event::Started { .. }))
            .map(Event::id)
            .collect();
        assert_eq!(started, vec![1, 3, 4, 5, 0, 6, 7, 2, 8, 9]);
        let mut by_body: Vec<StepId> = (0..10).collect();
        by_body.sort_by_key(|&i| f.probe.start(i));
        assert_eq!(by_body, started);

        // Parallelism 3: Started events still come in ascending order.
        let mut g = Fixture::new(12);
        for i in 0..12 {
            g.add(&format!("s{i}"), sleep(1));
        }
        let (_, events) = g.run(3);
        let started: Vec<StepId> = events
            .iter()
            .filter(|e| matches!(e, Event::Started { .. }))
            .map(Event::id)
            .collect();
        assert_eq!(started, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn cancellation_stops_dispatch_and_wakes_sleeping_waits() {
        let mut f = Fixture::new(6);
        let cancel = Cancel::new();
        let trigger = cancel.clone();
        f.add(
            "cancel the run",
            Box::new(move |_| {
                thread::sleep(Duration::from_millis(20));
                trigger.cancel();
                Ok(StepOutcome::Done)
            }),
        );
        f.add_wait(
            "wait forever",
            Box::new(|cx| {
                loop {
                    cx.sleep(Duration::from_secs(60))?;
                }
            }),
        );
        for i in 2..6 {
            f.add(&format!("s{i}"), ok());
        }
        let events = Mutex::new(Vec::new());
        let t0 = Instant::now();
        let report = f.dag.run_with_cancel(1, &cancel, &|e| events.lock().unwrap().push(e));
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(ids(&report.done, |s| s.id), vec![0]);
        assert_eq!(ids(&report.failed, |s| s.id), vec![1]);
        assert_eq!(report.failed[0].error, StepError::cancelled());
        assert_eq!(ids(&report.cancelled, |s| s.id), vec![2, 3, 4, 5]);
        let cancelled_events = events.lock().unwrap().iter().filter(|e| matches!(e, Event::Cancelled { .. })).count();
        assert_eq!(cancelled_events, 4);
        assert!(!report.ok());
        let text = report.render();
        assert!(text.contains("Not started (cancelled):\n  - test.s2: s2\n"), "{text}");
        assert!(text.lines().last().unwrap().starts_with("Apply cancelled after "), "{text}");
        assert!(text.ends_with(": 1 done, 1 failed, 4 not started.\n"), "{text}");
    }

    #[test]
    fn a_panicking_observer_does_not_stop_the_run() {
        let mut f = Fixture::new(20);
        random_dag(&mut f, 20, 2, 3, |_| (false, ok()));
        let report = f.dag.run(3, &|e| {
            if matches!(e, Event::Finished { .. }) {
                panic!("observer bug");
            }
        });
        assert!(report.ok());
        assert_eq!(report.done.len(), 20);
    }

    #[test]
    fn empty_dag() {
        let f = Fixture::new(0);
        assert_eq!(f.dag.validate(), Ok(()));
        let (report, events) = f.run(10);
        assert!(report.ok() && events.is_empty() && report.done.is_empty());
        assert!(report.render().starts_with("Apply complete after 0ms: 0 done."));
    }

    #[test]
    fn report_renders_errors_objects_and_causes() {
        let mut f = Fixture::new(4);
        f.add("create bridge vf-lan0", ok());
        f.add("define domain demo-web", already());
        let start = f.add(
            "start domain demo-web",
            Box::new(|_| {
                Err(StepError::new("libvirt: Requested operation is not valid\nsecond line")
                    .with_hint("check `virsh dominfo demo-web`"))
            }),
        );
        let lease = f.add_wait("wait for lease demo-web", ok());
        f.dag.depend(lease, start);
        let (report, _) = f.run(2);
        let text = report.render();
        assert!(text.contains("Done:\n  + test.create bridge vf-lan0: create bridge vf-lan0 ("), "{text}");
        assert!(text.contains("Already in place:\n  = test.define domain demo-web: define domain demo-web\n"));
        assert!(text.contains("  x test.start domain demo-web: start domain demo-web (after "));
        assert!(text.contains(
            "      error: libvirt: Requested operation is not valid\n             second line\n"
        ));
        assert!(text.contains("      hint: check `virsh dominfo demo-web`\n"));
        assert!(text.contains(
            "Skipped (a dependency failed):\n  - test.wait for lease demo-web: wait for lease demo-web \
             (because \"start domain demo-web\" failed)\n"
        ));
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("Apply failed after "), "{last}");
        assert!(last.ends_with(": 1 done, 1 already in place, 1 failed, 1 skipped."), "{last}");
        assert_eq!(text, report.to_string());
    }

    #[test]
    fn stress_2000_step_random_dag() {
        let n = 2000;
        let mut f = Fixture::new(n);
        random_dag(&mut f, n, 4, 0xC0FFEE, |rng| {
            let wait = rng.below(20) == 0;
            (wait, ok())
        });
        assert_eq!(f.dag.validate(), Ok(()));
        let t0 = Instant::now();
        let (report, events) = f.run(8);
        let elapsed = t0.elapsed();
        eprintln!("2000-step random DAG: {elapsed:?}");
        assert!(report.ok(), "{}", report.render());
        assert_eq!(report.done.len(), n);
        assert_eq!(events.len(), 2 * n);
        for i in 0..n {
            assert_eq!(f.probe.runs(i), 1);
        }
        f.assert_order();
        assert!(f.probe.max_running() <= 8);
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    #[test]
    fn stress_random_failures_skip_consistently() {
        let n = 1000;
        let mut f = Fixture::new(n);
        random_dag(&mut f, n, 3, 99, |rng| {
            let wait = rng.below(10) == 0;
            (wait, if rng.below(25) == 0 { fail("random failure") } else { ok() })
        });
        let (report, events) = f.run(6);
        f.assert_order();
        // Every step appears exactly once; a step ran iff none of its
        // transitive dependencies failed.
        let mut seen = vec![0; n];
        for id in ids(&report.done, |s| s.id).into_iter().chain(ids(&report.failed, |s| s.id)) {
            seen[id] += 1;
            assert_eq!(f.probe.runs(id), 1);
        }
        for s in &report.skipped {
            seen[s.id] += 1;
            assert_eq!(f.probe.runs(s.id), 0);
            assert!(report.failed.iter().any(|x| x.id == s.because));
        }
        assert!(seen.iter().all(|&c| c == 1));
        let terminal = events.iter().filter(|e| !matches!(e, Event::Started { .. })).count();
        assert_eq!(terminal, n);
        assert!(!report.failed.is_empty() && !report.skipped.is_empty());
    }

    /// Not a timing assertion: prints the executor's overhead per step.
    /// `cargo test --release -- apply::dag::tests::overhead --nocapture`
    #[test]
    fn overhead_per_step_10000_noop_steps() {
        struct Noop;
        impl Step for Noop {
            fn describe(&self) -> String {
                "noop".to_string()
            }
            fn address(&self) -> &str {
                "test.noop"
            }
            fn run(&self, _: &StepContext) -> Result<StepOutcome, StepError> {
                Ok(StepOutcome::Done)
            }
        }
        let n = 10_000;
        let measure = |label: &str, parallelism: usize, dag: &Dag<Noop>| {
            let t0 = Instant::now();
            let report = dag.run(parallelism, &|_| {});
            let elapsed = t0.elapsed();
            assert!(report.ok());
            eprintln!(
                "{label}, parallelism {parallelism}: {elapsed:?} total, {:.2} µs/step",
                elapsed.as_secs_f64() * 1e6 / n as f64
            );
        };
        let mut independent = Dag::new();
        for _ in 0..n {
            independent.add(Noop);
        }
        measure("10000 independent no-op steps", 1, &independent);
        measure("10000 independent no-op steps", 10, &independent);
        let mut chain = Dag::new();
        for i in 0..n {
            chain.add(Noop);
            if i > 0 {
                chain.depend(i, i - 1);
            }
        }
        measure("10000-step chain", 10, &chain);
        let mut random = Dag::new();
        let mut rng = Rng(5);
        for i in 0..n {
            random.add(Noop);
            for _ in 0..rng.below(4) {
                if i > 0 {
                    random.depend(i, rng.below(i));
                }
            }
        }
        measure("10000-step random DAG", 10, &random);
    }
}
