/*
 * abi_checks.c — behavioural checks of the brats-ldm C ABI through the real library: misuse
 * (NULL pointers, bad options, small or misaligned buffers, corrupt / truncated / missing blobs,
 * destroyed and foreign handles), re-entrancy and concurrent use (BRATS_LDM_ERR_BUSY),
 * cancellation, determinism across generators and threads, and the last-error rules.
 *
 *   abi_checks BLOB STEPS     (a small blob; STEPS keeps it fast, e.g. 3)
 *
 * Prints one line per check and "N passed, N failed"; exits 0 only if every check passed.
 * Built and run by runtime/tests/capi_c.rs (and under valgrind by its ignored test).
 */
#include "brats_ldm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0, failed = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (cond) {                                        \
            passed++;                                      \
        } else {                                           \
            failed++;                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf(" [last error: %s]\n", brats_ldm_last_error()); \
        }                                                  \
    } while (0)

/* Status equals `want` and a message was recorded (containing `needle` when given). */
#define EXPECT(call, want, needle)                                                             \
    do {                                                                                       \
        brats_ldm_status st_ = (call);                                                         \
        const char *msg_ = brats_ldm_last_error();                                             \
        int ok_ = st_ == (want) && msg_ != NULL && (want == BRATS_LDM_OK ? msg_[0] == '\0'     \
                                                                         : msg_[0] != '\0');   \
        if (ok_ && (needle) != NULL) ok_ = strstr(msg_, (needle)) != NULL;                     \
        CHECK(ok_, "%s -> %s, want %s", #call, brats_ldm_status_string(st_),                   \
              brats_ldm_status_string(want));                                                  \
        if (ok_) printf("ok   %-28s %s\n", brats_ldm_status_string(st_), msg_);               \
    } while (0)

static const char *NONE = NULL;
static uint32_t g_steps = 3;

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long size = ftell(f);
    if (size <= 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return NULL; }
    unsigned char *buf = malloc((size_t)size);
    if (buf != NULL && fread(buf, 1, (size_t)size, f) != (size_t)size) { free(buf); buf = NULL; }
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static brats_ldm_options small_options(void) {
    brats_ldm_options o;
    BRATS_LDM_OPTIONS_INIT(&o);
    o.steps = g_steps;
    o.threads = 2; /* a worker thread besides the caller: cancellation must not strand it */
    return o;
}

/* ---- callbacks ---------------------------------------------------------------------------- */

typedef struct {
    brats_ldm_generator *gen;
    brats_ldm_status len_status, destroy_status, gen_status;
    int calls;
} reentry_probe;

static int32_t reenter(const brats_ldm_progress *p, void *user) {
    reentry_probe *probe = user;
    if (probe->calls++ == 0) {
        size_t n = 0;
        float dummy[1];
        probe->len_status = brats_ldm_get_output_len(probe->gen, &n);
        probe->destroy_status = brats_ldm_destroy(probe->gen);
        probe->gen_status = brats_ldm_generate(probe->gen, 1, dummy, 1, NULL, NULL);
    }
    (void)p;
    return 0;
}

typedef struct {
    uint32_t cancel_at;
    uint32_t last_step;
    int decoding_seen;
} cancel_probe;

static int32_t cancel_at_step(const brats_ldm_progress *p, void *user) {
    cancel_probe *c = user;
    if (p->stage == BRATS_LDM_STAGE_DECODING) {
        c->decoding_seen = 1;
        return 0;
    }
    c->last_step = p->step;
    return p->step == c->cancel_at ? 1 : 0;
}

static int32_t cancel_at_decoding(const brats_ldm_progress *p, void *user) {
    (void)user;
    return p->stage == BRATS_LDM_STAGE_DECODING ? 7 : 0;
}

/* ---- threads ------------------------------------------------------------------------------ */

typedef struct {
    const char *blob;
    uint64_t seed;
    float *out;
    size_t n;
    brats_ldm_status status;
} worker_job;

static void *own_generator_worker(void *arg) {
    worker_job *job = arg;
    brats_ldm_options o = small_options();
    brats_ldm_generator *g = NULL;
    job->status = brats_ldm_create_from_path(job->blob, &o, &g);
    if (job->status == BRATS_LDM_OK) {
        job->status = brats_ldm_generate(g, job->seed, job->out, job->n, NULL, NULL);
        brats_ldm_status d = brats_ldm_destroy(g);
        if (job->status == BRATS_LDM_OK) job->status = d;
    }
    return NULL;
}

/* Holds a generate call open (inside its callback) until the other thread has tried the same
 * generator, so the overlap is certain rather than a matter of timing. */
typedef struct {
    brats_ldm_generator *gen;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int in_callback, other_done;
    brats_ldm_status other_status;
    char other_message[512];
} overlap_state;

static int32_t hold_open(const brats_ldm_progress *p, void *user) {
    overlap_state *s = user;
    if (p->stage == BRATS_LDM_STAGE_SAMPLING && p->step == 0) {
        pthread_mutex_lock(&s->lock);
        s->in_callback = 1;
        pthread_cond_broadcast(&s->cond);
        while (!s->other_done) pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
    }
    return 0;
}

static void *other_thread(void *arg) {
    overlap_state *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->in_callback) pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    size_t n = 0;
    brats_ldm_status st = brats_ldm_get_output_len(s->gen, &n);
    pthread_mutex_lock(&s->lock);
    s->other_status = st;
    snprintf(s->other_message, sizeof s->other_message, "%s", brats_ldm_last_error());
    s->other_done = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s BLOB STEPS\n", argv[0]);
        return 2;
    }
    const char *blob_path = argv[1];
    g_steps = (uint32_t)strtoul(argv[2], NULL, 10);
    if (g_steps < 2) {
        fprintf(stderr, "STEPS must be at least 2\n");
        return 2;
    }

    /* version and status names */
    uint32_t major = 99, minor = 99, patch = 99;
    EXPECT(brats_ldm_version(&major, &minor, &patch), BRATS_LDM_OK, NONE);
    CHECK(major == BRATS_LDM_VERSION_MAJOR && minor == BRATS_LDM_VERSION_MINOR &&
              patch == BRATS_LDM_VERSION_PATCH,
          "version %u.%u.%u differs from the header", major, minor, patch);
    char expect_version[64];
    snprintf(expect_version, sizeof expect_version, "%u.%u.%u", major, minor, patch);
    CHECK(strcmp(brats_ldm_version_string(), expect_version) == 0, "version string %s",
          brats_ldm_version_string());
    EXPECT(brats_ldm_version(NULL, &minor, &patch), BRATS_LDM_ERR_NULL_POINTER, "NULL");
    CHECK(strcmp(brats_ldm_status_string(BRATS_LDM_ERR_BUSY), "BRATS_LDM_ERR_BUSY") == 0, "name");
    CHECK(strcmp(brats_ldm_status_string(-5), "unknown status") == 0, "unknown name");

    /* options */
    EXPECT(brats_ldm_options_init(NULL, sizeof(brats_ldm_options)), BRATS_LDM_ERR_NULL_POINTER, "options");
    brats_ldm_options o;
    EXPECT(brats_ldm_options_init(&o, 4), BRATS_LDM_ERR_INVALID_ARGUMENT, "struct_size");
    EXPECT(BRATS_LDM_OPTIONS_INIT(&o), BRATS_LDM_OK, NONE);
    CHECK(o.struct_size == sizeof o && o.device == BRATS_LDM_DEVICE_CPU && o.steps == 0 &&
              o.sampler == BRATS_LDM_SAMPLER_DEFAULT && o.max_memory == 0,
          "defaults");

    brats_ldm_generator *g = (brats_ldm_generator *)0x1;
    /* create: NULL pointers, missing file, bad options */
    EXPECT(brats_ldm_create_from_path(NULL, NULL, &g), BRATS_LDM_ERR_NULL_POINTER, "path");
    CHECK(g == NULL, "*out must be NULL after a failed create");
    EXPECT(brats_ldm_create_from_path(blob_path, NULL, NULL), BRATS_LDM_ERR_NULL_POINTER, "out");
    EXPECT(brats_ldm_create_from_path("/nonexistent/dir/model.blob", NULL, &g), BRATS_LDM_ERR_IO,
           "/nonexistent/dir/model.blob");
    EXPECT(brats_ldm_create_from_path("", NULL, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "empty");
    o = small_options();
    o.sampler = 42;
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "sampler");
    o = small_options();
    o.eta = 0.5f; /* eta without DDIM */
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "eta");
    o = small_options();
    o.struct_size = 0; /* as if never initialised */
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "BRATS_LDM_OPTIONS_INIT");
    o = small_options();
    o.precision = BRATS_LDM_PRECISION_F16; /* the CPU backend computes in f32 only */
    brats_ldm_status st = brats_ldm_create_from_path(blob_path, &o, &g);
    CHECK(st != BRATS_LDM_OK && g == NULL && brats_ldm_last_error()[0] != '\0', "f16 on CPU: %s",
          brats_ldm_status_string(st));
    o = small_options();
    o.latent_shape[0] = 8; /* D = 9 is not divisible by 2^(levels-1) */
    o.latent_shape[1] = 9;
    o.latent_shape[2] = 8;
    o.latent_shape[3] = 4;
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "latent");
    o.latent_shape[1] = 0; /* partly given */
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "latent_shape");
    o = small_options();
    o.sampler = BRATS_LDM_SAMPLER_PNDM; /* PNDM's Runge-Kutta warm-up needs 4 steps, not 3 */
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_INVALID_ARGUMENT, "PNDM");
    o = small_options();
    o.device = BRATS_LDM_DEVICE_CUDA;
    o.device_index = 9999;
    st = brats_ldm_create_from_path(blob_path, &o, &g);
    CHECK(st != BRATS_LDM_OK && g == NULL && brats_ldm_last_error()[0] != '\0', "cuda:9999: %s",
          brats_ldm_status_string(st));
    o = small_options();
    o.max_memory = 1; /* one byte: no plan fits */
    EXPECT(brats_ldm_create_from_path(blob_path, &o, &g), BRATS_LDM_ERR_OUT_OF_MEMORY, "max_memory");

    /* create from bytes: corrupt, truncated, empty, NULL */
    size_t blob_len = 0;
    unsigned char *bytes = read_file(blob_path, &blob_len);
    CHECK(bytes != NULL && blob_len > 1024, "read %s", blob_path);
    if (bytes == NULL) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    EXPECT(brats_ldm_create_from_bytes(NULL, blob_len, NULL, &g), BRATS_LDM_ERR_NULL_POINTER, "data");
    EXPECT(brats_ldm_create_from_bytes(bytes, 0, NULL, &g), BRATS_LDM_ERR_INVALID_BLOB, "len");
    EXPECT(brats_ldm_create_from_bytes(bytes, blob_len / 2, NULL, &g), BRATS_LDM_ERR_INVALID_BLOB, NONE);
    EXPECT(brats_ldm_create_from_bytes(bytes, 7, NULL, &g), BRATS_LDM_ERR_INVALID_BLOB, NONE);
    bytes[blob_len / 2] ^= 0x40; /* one flipped bit in the tensor data */
    EXPECT(brats_ldm_create_from_bytes(bytes, blob_len, NULL, &g), BRATS_LDM_ERR_INVALID_BLOB, NONE);
    bytes[blob_len / 2] ^= 0x40;
    bytes[0] ^= 0xff; /* bad magic */
    EXPECT(brats_ldm_create_from_bytes(bytes, blob_len, NULL, &g), BRATS_LDM_ERR_INVALID_BLOB, "magic");
    bytes[0] ^= 0xff;
    CHECK(g == NULL, "*out must be NULL after a failed create");

    /* another latent shape through the options: the output follows it (x4 per spatial axis) */
    o = small_options();
    o.latent_shape[0] = 8;
    o.latent_shape[1] = 4;
    o.latent_shape[2] = 8;
    o.latent_shape[3] = 4;
    EXPECT(brats_ldm_create_from_bytes(bytes, blob_len, &o, &g), BRATS_LDM_OK, NONE);
    if (g != NULL) {
        brats_ldm_output_info small;
        EXPECT(brats_ldm_get_output_info(g, &small, sizeof small), BRATS_LDM_OK, NONE);
        CHECK(small.latent_shape[1] == 4 && small.shape[1] == 16 && small.shape[2] == 32 &&
                  small.num_floats == (uint64_t)small.shape[0] * small.shape[1] * small.shape[2] * small.shape[3],
              "latent option: output [%u, %u, %u, %u]", small.shape[0], small.shape[1], small.shape[2],
              small.shape[3]);
        EXPECT(brats_ldm_destroy(g), BRATS_LDM_OK, NONE);
        g = NULL;
    }

    /* a working generator from bytes, then the bytes are freed (the library copied them) */
    o = small_options();
    EXPECT(brats_ldm_create_from_bytes(bytes, blob_len, &o, &g), BRATS_LDM_OK, NONE);
    free(bytes);
    if (g == NULL) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }

    /* queries */
    size_t n = 0;
    EXPECT(brats_ldm_get_output_len(g, &n), BRATS_LDM_OK, NONE);
    EXPECT(brats_ldm_get_output_len(NULL, &n), BRATS_LDM_ERR_NULL_POINTER, "generator");
    EXPECT(brats_ldm_get_output_len(g, NULL), BRATS_LDM_ERR_NULL_POINTER, "num_floats");
    brats_ldm_output_info info;
    EXPECT(brats_ldm_get_output_info(g, &info, sizeof info), BRATS_LDM_OK, NONE);
    EXPECT(brats_ldm_get_output_info(g, &info, 8), BRATS_LDM_ERR_INVALID_ARGUMENT, "out_size");
    EXPECT(brats_ldm_get_output_info(g, NULL, sizeof info), BRATS_LDM_ERR_NULL_POINTER, "out");
    CHECK(info.num_floats == n && (size_t)info.shape[0] * info.shape[1] * info.shape[2] * info.shape[3] == n,
          "output length");
    CHECK(info.steps == g_steps, "steps %u", info.steps);
    brats_ldm_plan plan;
    EXPECT(brats_ldm_get_plan(g, &plan, sizeof plan), BRATS_LDM_OK, NONE);
    CHECK(plan.total_bytes >= plan.arena_bytes && plan.weight_bytes > 0, "plan bytes");
    EXPECT(brats_ldm_get_plan(g, NULL, sizeof plan), BRATS_LDM_ERR_NULL_POINTER, "out");

    /* generate: buffers */
    float *ref = malloc((n + 1) * sizeof(float));
    float *again = malloc((n + 1) * sizeof(float));
    CHECK(ref != NULL && again != NULL, "malloc");
    if (ref == NULL || again == NULL) return 1;
    EXPECT(brats_ldm_generate(g, 7, NULL, n, NULL, NULL), BRATS_LDM_ERR_NULL_POINTER, "out");
    EXPECT(brats_ldm_generate(g, 7, ref, n - 1, NULL, NULL), BRATS_LDM_ERR_BUFFER_TOO_SMALL, "needs");
    EXPECT(brats_ldm_generate(g, 7, ref, 0, NULL, NULL), BRATS_LDM_ERR_BUFFER_TOO_SMALL, "needs");
    EXPECT(brats_ldm_generate(g, 7, (float *)((char *)ref + 1), n, NULL, NULL),
           BRATS_LDM_ERR_INVALID_ARGUMENT, "aligned");
    ref[n] = 12345.0f; /* sentinel: a larger buffer is fine, only n floats are written */
    EXPECT(brats_ldm_generate(g, 7, ref, n + 1, NULL, NULL), BRATS_LDM_OK, NONE);
    CHECK(ref[n] == 12345.0f, "wrote past the volume");
    EXPECT(brats_ldm_generate(g, 7, again, n, NULL, NULL), BRATS_LDM_OK, NONE);
    CHECK(memcmp(ref, again, n * sizeof(float)) == 0, "same seed, same generator: same bytes");
    EXPECT(brats_ldm_generate(g, 8, again, n, NULL, NULL), BRATS_LDM_OK, NONE);
    CHECK(memcmp(ref, again, n * sizeof(float)) != 0, "another seed gives another volume");

    /* re-entrancy from the progress callback */
    reentry_probe probe = {g, -1, -1, -1, 0};
    EXPECT(brats_ldm_generate(g, 7, again, n, reenter, &probe), BRATS_LDM_OK, NONE);
    CHECK(probe.len_status == BRATS_LDM_ERR_BUSY, "query from callback: %s", brats_ldm_status_string(probe.len_status));
    CHECK(probe.destroy_status == BRATS_LDM_ERR_BUSY, "destroy from callback: %s",
          brats_ldm_status_string(probe.destroy_status));
    CHECK(probe.gen_status == BRATS_LDM_ERR_BUSY, "generate from callback: %s",
          brats_ldm_status_string(probe.gen_status));
    CHECK(probe.calls == (int)g_steps + 1, "progress calls %d", probe.calls);
    CHECK(memcmp(ref, again, n * sizeof(float)) == 0, "callback does not change the result");

    /* cancellation, and the generator stays usable */
    cancel_probe cp = {1, 0, 0};
    EXPECT(brats_ldm_generate(g, 7, again, n, cancel_at_step, &cp), BRATS_LDM_ERR_CANCELLED, "step 1");
    CHECK(cp.last_step == 1 && !cp.decoding_seen, "stopped at step %u", cp.last_step);
    EXPECT(brats_ldm_generate(g, 7, again, n, cancel_at_decoding, NULL), BRATS_LDM_ERR_CANCELLED, "decoding");
    EXPECT(brats_ldm_generate(g, 7, again, n, NULL, NULL), BRATS_LDM_OK, NONE);
    CHECK(memcmp(ref, again, n * sizeof(float)) == 0, "same bytes after a cancelled call");

    /* one generator used from two threads at once: the second call is refused, not raced */
    overlap_state ov;
    memset(&ov, 0, sizeof ov);
    ov.gen = g;
    pthread_mutex_init(&ov.lock, NULL);
    pthread_cond_init(&ov.cond, NULL);
    pthread_t other;
    CHECK(pthread_create(&other, NULL, other_thread, &ov) == 0, "pthread_create");
    EXPECT(brats_ldm_generate(g, 7, again, n, hold_open, &ov), BRATS_LDM_OK, NONE);
    pthread_join(other, NULL);
    CHECK(ov.other_status == BRATS_LDM_ERR_BUSY && strstr(ov.other_message, "busy") != NULL,
          "concurrent call: %s (%s)", brats_ldm_status_string(ov.other_status), ov.other_message);
    pthread_mutex_destroy(&ov.lock);
    pthread_cond_destroy(&ov.cond);

    /* separate generators on separate threads, concurrently: same bytes as above */
    enum { WORKERS = 2 };
    worker_job jobs[WORKERS];
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        jobs[i].blob = blob_path;
        jobs[i].seed = 7;
        jobs[i].n = n;
        jobs[i].out = malloc(n * sizeof(float));
        jobs[i].status = -1;
        CHECK(jobs[i].out != NULL && pthread_create(&threads[i], NULL, own_generator_worker, &jobs[i]) == 0,
              "start worker %d", i);
    }
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].status == BRATS_LDM_OK, "worker %d: %s", i, brats_ldm_status_string(jobs[i].status));
        CHECK(memcmp(ref, jobs[i].out, n * sizeof(float)) == 0, "worker %d: same bytes", i);
        free(jobs[i].out);
    }

    /* foreign and destroyed handles */
    int not_a_generator[64] = {0};
    EXPECT(brats_ldm_get_output_len((brats_ldm_generator *)not_a_generator, &n), BRATS_LDM_ERR_INVALID_HANDLE,
           "not a live generator");
    EXPECT(brats_ldm_destroy((brats_ldm_generator *)not_a_generator), BRATS_LDM_ERR_INVALID_HANDLE, NONE);
    EXPECT(brats_ldm_destroy(g), BRATS_LDM_OK, NONE);
    /* no create after this point, so the freed address cannot have been reused */
    EXPECT(brats_ldm_get_output_len(g, &n), BRATS_LDM_ERR_INVALID_HANDLE, "destroyed");
    EXPECT(brats_ldm_generate(g, 7, ref, n, NULL, NULL), BRATS_LDM_ERR_INVALID_HANDLE, NONE);
    EXPECT(brats_ldm_get_plan(g, &plan, sizeof plan), BRATS_LDM_ERR_INVALID_HANDLE, NONE);
    EXPECT(brats_ldm_destroy(g), BRATS_LDM_ERR_INVALID_HANDLE, NONE);
    EXPECT(brats_ldm_destroy(NULL), BRATS_LDM_OK, NONE);

    free(ref);
    free(again);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
