//! A fixed thread pool started at load: `run` hands one borrowed closure to every worker with no
//! heap allocation per call (std's futex-based Mutex/Condvar), and `for_each` distributes task
//! indices dynamically. Which thread runs a task never changes what the task computes.

use crate::error::RuntimeError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize) + Sync;

/// Jobs smaller than this (multiply-adds or elements) run on the calling thread.
pub const SERIAL_WORK: usize = 1 << 18;

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is Sync and `run` keeps it alive until every worker has finished with it.
unsafe impl Send for JobPtr {}

struct State {
    /// Workers that have finished starting (thread start-up allocates inside std).
    started: usize,
    job: Option<JobPtr>,
    generation: u64,
    busy: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in total (the caller's thread counts as one).
    pub fn new(threads: usize) -> Result<Pool, RuntimeError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { started: 0, job: None, generation: 0, busy: 0, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let mut workers = Vec::new();
        for tid in 1..threads.max(1) {
            let sh = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name(format!("ldm-worker-{tid}"))
                .spawn(move || worker(sh, tid))
                .map_err(|e| RuntimeError::Thread(e.to_string()))?;
            workers.push(h);
        }
        // Wait until every worker runs, so that nothing is allocated by thread start-up later.
        {
            let mut st = lock(&shared.state);
            while st.started < workers.len() {
                st = shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        Ok(Pool { shared, workers })
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(thread_id)` once on every thread of the pool and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        // SAFETY: lifetime erasure; we wait below until no worker uses the pointer any more.
        let ptr: *const Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(f) };
        {
            let mut st = lock(&self.shared.state);
            st.job = Some(JobPtr(ptr));
            st.generation = st.generation.wrapping_add(1);
            st.busy = self.workers.len();
            self.shared.work.notify_all();
        }
        f(0);
        let mut st = lock(&self.shared.state);
        while st.busy > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
    }

    /// Runs `body(task, thread_id)` for every task in `0..n`, spread over the pool.
    pub fn for_each(&self, n: usize, body: &(dyn Fn(usize, usize) + Sync)) {
        self.for_each_sized(n, usize::MAX, body)
    }

    /// Like `for_each`, but runs everything on the calling thread when the whole job is small
    /// (`work` in multiply-adds or elements, under `SERIAL_WORK`): waking workers costs more.
    pub fn for_each_sized(&self, n: usize, work: usize, body: &(dyn Fn(usize, usize) + Sync)) {
        if n == 0 {
            return;
        }
        if n == 1 || self.workers.is_empty() || work < SERIAL_WORK {
            for i in 0..n {
                body(i, 0);
            }
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(&|tid| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            body(i, tid);
        });
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(sh: Arc<Shared>, tid: usize) {
    let _ = std::thread::current();
    {
        let mut st = lock(&sh.state);
        st.started += 1;
        sh.done.notify_all();
    }
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = lock(&sh.state);
            while st.generation == seen && !st.shutdown {
                st = sh.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job
        };
        if let Some(JobPtr(p)) = job {
            // SAFETY: `run` keeps the closure alive until `busy` reaches zero.
            let f = unsafe { &*p };
            f(tid);
        }
        let mut st = lock(&sh.state);
        st.busy -= 1;
        if st.busy == 0 {
            sh.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            self.shared.work.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3).unwrap();
        for n in [0usize, 1, 2, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each(n, &|i, _| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }
}
