/* The threads a whole encoder layer (encoder.c) or llama block (llama.c) is spread over: a parallel-for on
 * a small pool of workers. Two implementations of one protocol:
 * - natively, worker threads (pthreads) started on first use and kept for the life of the process;
 * - in the threaded WebAssembly build (-matomics, a shared memory of the module's own), Web Workers that
 *   instantiate the same module on the same memory and call gp_pool_worker, which never returns
 *   (web/threads.js starts them).
 * In the one-thread WebAssembly builds gp_parallel (simd.h) runs every part on the caller and this file is
 * empty.
 *
 * Between the phases of a layer (and between layers, tens of microseconds of Python apart) the workers
 * spin before they sleep: handing a phase to a sleeping thread costs 0.1-0.2 ms here (a futex wake, a
 * halted virtual CPU), a spinning one picks it up at once. One job runs at a time; a caller that finds the
 * pool busy (another thread inside a kernel) runs its parts itself, so no caller ever waits on another's
 * job. */
#include "simd.h"

#ifndef __wasm__
#include <pthread.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define RELAX() __asm__ __volatile__("yield")
#else
#define RELAX() ((void)0)
#endif

#define MAX_WORKERS 63
#define SPIN_NS 500000L

struct job {
  gp_part_fn fn;
  void *ctx;
  int total, parts, threads;
  int next, done; /* atomic */
};

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;   /* held by the caller whose job runs */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;   /* guards sleeping and waking */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int workers;               /* started so far (under busy) */
static unsigned generation;       /* bumped per job: what sleeping and spinning workers watch (atomic) */
static struct job *current;       /* the running job, or NULL (atomic) */
static int readers;               /* workers that may be reading *current (atomic) */

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Parts of `j` until none is left, taken one at a time (a thread that starts late, or is descheduled, holds
 * up one part, not a share fixed in advance); part p covers [total * p / parts, total * (p + 1) / parts).
 * `slot` is this thread's: 0 the caller, 1.. the workers. */
static void run_parts(struct job *j, int slot) {
  for (;;) {
    int p = __atomic_fetch_add(&j->next, 1, __ATOMIC_ACQ_REL);
    if (p >= j->parts) return;
    j->fn(j->ctx, (int)((long)j->total * p / j->parts), (int)((long)j->total * (p + 1) / j->parts), slot);
    __atomic_fetch_add(&j->done, 1, __ATOMIC_RELEASE);
  }
}

static void *worker(void *arg) {
  const int slot = (int)((long)arg >> 32);
  unsigned seen = (unsigned)(long)arg;
  for (;;) {
    long until = now_ns() + SPIN_NS;
    for (int spins = 1; __atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen; spins++) {
      if ((spins & 255) == 0 && now_ns() > until) {
        pthread_mutex_lock(&lock);
        while (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen) pthread_cond_wait(&wake, &lock);
        pthread_mutex_unlock(&lock);
        break;
      }
      RELAX();
    }
    seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
    /* readers before current, and the caller clears current before it reads readers (both sequentially
     * consistent): either this worker sees no job, or the caller waits for it to be done with it. */
    __atomic_fetch_add(&readers, 1, __ATOMIC_SEQ_CST);
    struct job *j = __atomic_load_n(&current, __ATOMIC_SEQ_CST);
    if (j && slot < j->threads) run_parts(j, slot);   /* a pool grown for a wider job: only `threads` slots */
    __atomic_fetch_sub(&readers, 1, __ATOMIC_SEQ_CST);
  }
  return 0;
}

void gp_parallel(int threads, int total, int parts, gp_part_fn fn, void *ctx) {
  if (parts > total) parts = total;
  if (threads <= 1 || parts <= 1 || pthread_mutex_trylock(&busy) != 0) {
    if (total > 0) fn(ctx, 0, total, 0);   /* alone: one part (a row part streams every weight once more) */
    return;
  }
  while (workers < threads - 1 && workers < MAX_WORKERS) {
    pthread_t t;
    long arg = ((long)(workers + 1) << 32) | __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
    if (pthread_create(&t, 0, worker, (void *)arg) != 0) break;
    pthread_detach(t);
    workers++;
  }
  struct job j = {fn, ctx, total, parts, threads, 0, 0};
  __atomic_store_n(&current, &j, __ATOMIC_SEQ_CST);
  pthread_mutex_lock(&lock);
  __atomic_fetch_add(&generation, 1, __ATOMIC_ACQ_REL);
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  run_parts(&j, 0);
  while (__atomic_load_n(&j.done, __ATOMIC_ACQUIRE) < parts) RELAX();
  __atomic_store_n(&current, (struct job *)0, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&readers, __ATOMIC_SEQ_CST) > 0) RELAX();
  pthread_mutex_unlock(&busy);
}
#endif

#if defined(__wasm__) && defined(__wasm_atomics__)
/* The workers are Web Workers, each an instance of this module on the same shared memory: their statics
 * are shared, each has its own globals (web/threads.js gives each its own shadow stack). A worker that
 * finds no job sleeps in memory.atomic.wait32 (allowed in a worker); the caller only ever spins, so the
 * pool also serves a page's main thread, where waiting would trap. The spin is timed by the one function
 * the module imports, gp_clock_ms (performance.now(), checked every 1,024 polls): counted in polls it
 * lasted 1-2 ms in V8 but a tenth of that in SpiderMonkey, whose workers then slept between a text's
 * layers 20 times a call and missed half its phases (one CLIP text, Firefox: 2-thread layers at
 * single-thread speed in 18 of 20 calls). SPIN_MS outlasts the Python between two layers of a page's
 * forward; after a forward the worker sleeps within it. */
#define SPIN_MS 2.0
#define MAX_WORKERS 63
/* After its spin a worker lingers before it sleeps for good: for LINGER_MS it sleeps in ticks of LINGER_TICK_NS on
 * a word nobody notifies, so that it wakes on its own timer, on its own virtual CPU. Woken by a caller's notify
 * instead, it was put on the caller's virtual CPU in about a third of the tries here (AMD EPYC, 2 vCPUs under KVM):
 * the two took turns on one while the other idled, for 50-400 ms (docs/benchmarks.md, "Back on an AMD EPYC"),
 * and a woken call ran slower than one alone. A lingering worker sees the next job within a tick instead. */
#define LINGER_MS 1000.0
#define LINGER_TICK_NS 500000LL

__attribute__((import_module("env"), import_name("gp_clock_ms"))) double gp_clock_ms(void);

struct job {
  gp_part_fn fn;
  void *ctx;
  int total, parts, threads;
  int next, done; /* atomic */
};

static int busy;              /* 1 while a caller's job runs (atomic) */
static int workers;           /* workers that have joined (atomic) */
static int generation;        /* bumped per job: what sleeping and spinning workers watch (atomic) */
static struct job job;        /* the one job (busy guards it): static, so no caller's stack is shared */
static struct job *current;   /* &job while it runs, else NULL (atomic) */
static int readers;           /* workers that may be reading *current (atomic) */
static int awake;             /* workers not asleep for good: spinning, running parts or lingering (atomic) */
static int never_notified;    /* what lingering workers wait on, so that only their own timers wake them */

static void run_parts(struct job *j, int slot) {
  for (;;) {
    int p = __atomic_fetch_add(&j->next, 1, __ATOMIC_ACQ_REL);
    if (p >= j->parts) return;
    j->fn(j->ctx, (int)((long long)j->total * p / j->parts), (int)((long long)j->total * (p + 1) / j->parts), slot);
    __atomic_fetch_add(&j->done, 1, __ATOMIC_RELEASE);
  }
}

/* A worker's life: slot 1.. (0 is the caller). Never returns. */
GP_EXPORT(gp_pool_worker)
void gp_pool_worker(int slot);
void gp_pool_worker(int slot) {
  __atomic_fetch_add(&awake, 1, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&workers, 1, __ATOMIC_SEQ_CST);
  int seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
  for (;;) {
    double spin_until = gp_clock_ms() + SPIN_MS, linger_until = spin_until + LINGER_MS;
    for (int polls = 1; __atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen; polls++) {
      if ((polls & 1023) != 0) continue;
      double now = gp_clock_ms();
      if (now <= spin_until) continue;
      if (now < linger_until) {
        __builtin_wasm_memory_atomic_wait32(&never_notified, 0, LINGER_TICK_NS);
        continue;
      }
      __atomic_fetch_sub(&awake, 1, __ATOMIC_SEQ_CST);
      __builtin_wasm_memory_atomic_wait32(&generation, seen, -1);
      __atomic_fetch_add(&awake, 1, __ATOMIC_SEQ_CST);
    }
    seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
    __atomic_fetch_add(&readers, 1, __ATOMIC_SEQ_CST);
    struct job *j = __atomic_load_n(&current, __ATOMIC_SEQ_CST);
    if (j && slot < j->threads) run_parts(j, slot);
    __atomic_fetch_sub(&readers, 1, __ATOMIC_SEQ_CST);
  }
}

/* Wakes sleeping workers without a job, to spin for the next one: called as a batch of layers begins, so a
 * worker's wake-up (a futex, an idle virtual CPU: up to milliseconds here) overlaps the caller's own work
 * instead of the first phase. */
GP_EXPORT(gp_pool_wake)
void gp_pool_wake(void);
void gp_pool_wake(void) {
  __atomic_fetch_add(&generation, 1, __ATOMIC_ACQ_REL);
  __builtin_wasm_memory_atomic_notify(&generation, MAX_WORKERS);
}

/* Workers awake now (spinning for a job, running one, or lingering: each sees a job within a tick) rather than
 * asleep for good: a call that finds them awake uses them; asleep, whether to wake them is
 * gpuport/host/wasm_threads.py's call. */
GP_EXPORT(gp_pool_awake)
int gp_pool_awake(void);
int gp_pool_awake(void) { return __atomic_load_n(&awake, __ATOMIC_SEQ_CST); }

/* Workers that have joined the pool: web/threads.js waits for all it started before it reports them. */
GP_EXPORT(gp_pool_workers)
int gp_pool_workers(void);
int gp_pool_workers(void) { return __atomic_load_n(&workers, __ATOMIC_SEQ_CST); }

void gp_parallel(int threads, int total, int parts, gp_part_fn fn, void *ctx) {
  if (parts > total) parts = total;
  int idle = 0;
  if (threads <= 1 || parts <= 1 || __atomic_load_n(&workers, __ATOMIC_ACQUIRE) == 0 ||
      !__atomic_compare_exchange_n(&busy, &idle, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
    if (total > 0) fn(ctx, 0, total, 0);   /* alone: one part, as natively */
    return;
  }
  job = (struct job){fn, ctx, total, parts, threads, 0, 0};
  __atomic_store_n(&current, &job, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&generation, 1, __ATOMIC_ACQ_REL);
  __builtin_wasm_memory_atomic_notify(&generation, MAX_WORKERS);
  run_parts(&job, 0);
  while (__atomic_load_n(&job.done, __ATOMIC_ACQUIRE) < parts) {
  }
  __atomic_store_n(&current, (struct job *)0, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&readers, __ATOMIC_SEQ_CST) > 0) {
  }
  __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
}
#endif
