/*
 * brats_ldm.h — C ABI of the brats-ldm runtime (synthetic FLAIR brain MRI from a 3-D latent
 * diffusion model). Link against libldm_runtime.so (cdylib) or libldm_runtime.a (staticlib; on
 * Linux also link -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc, as `rustc --print
 * native-static-libs` lists); both come from `cargo build -p ldm-runtime [--release]`.
 * Hand-written; runtime/tests/capi_c.rs checks it against the Rust side: every constant, struct
 * size and field offset, the exported function set and the version macros.
 *
 * Usage:
 *     brats_ldm_options opts;
 *     BRATS_LDM_OPTIONS_INIT(&opts);          // defaults: CPU, f32, the blob's sampler and steps
 *     opts.steps = 25;
 *     brats_ldm_generator *g = NULL;
 *     if (brats_ldm_create_from_path("model.blob", &opts, &g) != BRATS_LDM_OK) {
 *         fprintf(stderr, "%s\n", brats_ldm_last_error());
 *     }
 *     size_t n = 0;
 *     brats_ldm_get_output_len(g, &n);             // floats per volume (C*D*H*W)
 *     float *vol = malloc(n * sizeof(float));
 *     brats_ldm_generate(g, 42, vol, n, NULL, NULL);
 *     brats_ldm_destroy(g);
 *
 * Status codes: every function that can fail returns a brats_ldm_status (0 = success). On
 * failure, output parameters are left untouched unless stated otherwise (create functions set
 * *out to NULL) and brats_ldm_last_error() describes what was wrong. Three functions cannot fail
 * and return their value directly: brats_ldm_version_string, brats_ldm_status_string and
 * brats_ldm_last_error. Like free(), brats_ldm_destroy(NULL) is a no-op that returns OK.
 *
 * Last error: stored per THREAD. brats_ldm_last_error() returns the message of the most recent
 * fallible brats_ldm_* call made on the calling thread, or "" when that call succeeded. The
 * pointer stays valid until the next fallible brats_ldm_* call on the same thread; copy it if
 * you need it longer.
 *
 * Panics: no Rust panic crosses this boundary. An internal error (a bug) is caught and returned
 * as BRATS_LDM_ERR_INTERNAL; a handle whose generate call hit one refuses further generation
 * (BRATS_LDM_ERR_INTERNAL) and should be destroyed.
 *
 * Memory: create allocates everything. Its large buffers are reserved fallibly (failure:
 * BRATS_LDM_ERR_OUT_OF_MEMORY), but an allocation failure elsewhere during create aborts the
 * process (Rust's allocation-failure behaviour): size things with brats_ldm_options.max_memory
 * and brats_ldm_get_plan. A successful brats_ldm_generate performs no heap allocation at all.
 *
 * Thread safety:
 *  - Separate generators may be used concurrently from separate threads.
 *  - A generator may move between threads, but is NOT re-entrant: at most one call on a given
 *    generator at a time. An overlapping call (from another thread, or from inside its own
 *    progress callback) is detected with an atomic flag and returns BRATS_LDM_ERR_BUSY without
 *    touching the generator. This includes brats_ldm_destroy while a generate is running.
 *  - Destroyed handles: the library keeps a registry of live generators, and every call checks
 *    the pointer against it before dereferencing it, so passing a destroyed (or never created)
 *    handle returns BRATS_LDM_ERR_INVALID_HANDLE instead of touching freed memory. Limit: if a
 *    later create happens to receive the same address, the stale pointer refers to the new
 *    generator and cannot be told apart. A magic field inside the generator additionally
 *    catches a live generator whose memory was overwritten by the caller.
 *  - The progress callback runs on the thread that called brats_ldm_generate.
 */
#ifndef BRATS_LDM_H
#define BRATS_LDM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the library this header belongs to (runtime crate version). */
#define BRATS_LDM_VERSION_MAJOR 0
#define BRATS_LDM_VERSION_MINOR 1
#define BRATS_LDM_VERSION_PATCH 0

/* ---- status codes -------------------------------------------------------------------------- */
typedef int32_t brats_ldm_status;

#define BRATS_LDM_OK 0
/* A required pointer argument was NULL. */
#define BRATS_LDM_ERR_NULL_POINTER 1
/* An argument or option has an invalid value (message names it). */
#define BRATS_LDM_ERR_INVALID_ARGUMENT 2
/* The output buffer holds fewer floats than one volume needs (see brats_ldm_get_output_len). */
#define BRATS_LDM_ERR_BUFFER_TOO_SMALL 3
/* The blob file could not be read. */
#define BRATS_LDM_ERR_IO 4
/* The blob is corrupt, truncated, of an unknown version, or inconsistent. */
#define BRATS_LDM_ERR_INVALID_BLOB 5
/* The requested device / precision / configuration is not available in this build or machine. */
#define BRATS_LDM_ERR_UNSUPPORTED 6
/* The plan does not fit the memory limit, or a size overflows. */
#define BRATS_LDM_ERR_OUT_OF_MEMORY 7
/* The progress callback returned non-zero: generation stopped, output contents unspecified. */
#define BRATS_LDM_ERR_CANCELLED 8
/* Another call on the same generator is in progress (the generator is not re-entrant). */
#define BRATS_LDM_ERR_BUSY 9
/* The handle is not a live generator (destroyed, never created, or overwritten). */
#define BRATS_LDM_ERR_INVALID_HANDLE 10
/* The runtime failed while generating (message says why). */
#define BRATS_LDM_ERR_RUNTIME 11
/* Internal error (a caught panic: a bug in the library). */
#define BRATS_LDM_ERR_INTERNAL 12

/* ---- enumerations used in options ---------------------------------------------------------- */
#define BRATS_LDM_DEVICE_CPU 0
#define BRATS_LDM_DEVICE_CUDA 1

#define BRATS_LDM_PRECISION_F32 0
#define BRATS_LDM_PRECISION_F16 1
#define BRATS_LDM_PRECISION_BF16 2

/* SAMPLER_DEFAULT: the sampler stored in the blob. */
#define BRATS_LDM_SAMPLER_DEFAULT 0
#define BRATS_LDM_SAMPLER_DDIM 1
#define BRATS_LDM_SAMPLER_DDPM 2
#define BRATS_LDM_SAMPLER_PNDM 3

/* Progress stages. */
#define BRATS_LDM_STAGE_SAMPLING 0
#define BRATS_LDM_STAGE_DECODING 1

/* ---- structs --------------------------------------------------------------------------------- */

/* Opaque generator: one loaded model with its memory plan and all buffers allocated. */
typedef struct brats_ldm_generator brats_ldm_generator;

/*
 * Creation options. Always initialise with BRATS_LDM_OPTIONS_INIT (or brats_ldm_options_init)
 * before setting fields: it fills the defaults and struct_size. Forward compatibility: a library
 * newer than this header reads only the first struct_size bytes and uses defaults for the rest;
 * a library older than this header accepts a larger struct only when the bytes it does not know
 * are all zero (otherwise BRATS_LDM_ERR_INVALID_ARGUMENT). In every other field, zero means the
 * default.
 */
typedef struct brats_ldm_options {
    uint32_t struct_size;     /* sizeof(brats_ldm_options), set by the init function */
    int32_t device;           /* BRATS_LDM_DEVICE_*; default CPU */
    uint32_t device_index;    /* CUDA device ordinal; must be 0 for CPU */
    int32_t precision;        /* BRATS_LDM_PRECISION_*; default F32 (CPU supports F32 only) */
    int32_t sampler;          /* BRATS_LDM_SAMPLER_*; default: the blob's */
    float eta;                /* DDIM eta >= 0 (0 = deterministic DDIM); must be 0 unless sampler is DDIM */
    uint32_t steps;           /* sampling steps; 0 = the blob's default */
    uint32_t threads;         /* CPU worker threads; 0 = the runtime's default */
    uint32_t latent_shape[4]; /* latent [C, D, H, W]; all 0 = the blob's default */
    uint64_t max_memory;      /* bound in bytes on everything but the weights (arena, workspaces,
                                 sampler state); the decoder then works in smaller slabs; 0 = none */
} brats_ldm_options;

/* The memory plan of a generator, in bytes; everything is allocated at create time. */
typedef struct brats_ldm_plan {
    uint64_t weight_bytes;    /* model weights as held by the runtime */
    uint64_t arena_bytes;     /* activation arena (liveness-based reuse) */
    uint64_t workspace_bytes; /* GEMM packing, normalisation slabs, attention scratch */
    uint64_t state_bytes;     /* sampler state: latent, epsilon, noise, time embedding */
    uint64_t total_bytes;     /* all of the above */
} brats_ldm_plan;

/* What one generated volume looks like. */
typedef struct brats_ldm_output_info {
    uint32_t shape[4];          /* output volume [C, D, H, W], C-order (W fastest) */
    uint32_t latent_shape[4];   /* latent [C, D, H, W] */
    uint64_t num_floats;        /* C*D*H*W: the float count brats_ldm_generate needs */
    uint32_t steps;             /* sampling steps per volume */
    float spacing_mm[3];        /* voxel size along D, H, W in mm */
    float intensity_range[2];   /* intensity range the model was trained on */
    char orientation[16];       /* NUL-terminated axis code of D, H, W, e.g. "RAS" */
} brats_ldm_output_info;

/* Passed to the progress callback. Valid only during the callback. */
typedef struct brats_ldm_progress {
    int32_t stage;        /* BRATS_LDM_STAGE_SAMPLING or BRATS_LDM_STAGE_DECODING */
    uint32_t step;        /* sampling: 0-based index of the step; decoding: equals total_steps */
    uint32_t total_steps; /* sampling steps per volume */
    int32_t timestep;     /* sampling: the diffusion timestep; decoding: -1 */
} brats_ldm_progress;

/*
 * Progress callback: called on the generating thread before each sampling step and once
 * before decoding. Return 0 to continue, non-zero to cancel (generate then returns
 * BRATS_LDM_ERR_CANCELLED and the generator stays usable). It must not unwind (longjmp / C++
 * exceptions) through the library. Calls on the same generator from inside it return
 * BRATS_LDM_ERR_BUSY.
 */
typedef int32_t (*brats_ldm_progress_fn)(const brats_ldm_progress *progress, void *user_data);

/* ---- functions ----------------------------------------------------------------------------- */

/* Library version as a static string, e.g. "0.1.0". Never fails. */
const char *brats_ldm_version_string(void);

/* Library version numbers; compare major with BRATS_LDM_VERSION_MAJOR. */
brats_ldm_status brats_ldm_version(uint32_t *major, uint32_t *minor, uint32_t *patch);

/* Static name of a status code, e.g. "BRATS_LDM_ERR_BUSY"; "unknown status" otherwise. */
const char *brats_ldm_status_string(brats_ldm_status status);

/* Message of the most recent fallible call on this thread; "" after a success. Never NULL. */
const char *brats_ldm_last_error(void);

/*
 * Fill *options with defaults. struct_size must be sizeof(brats_ldm_options) as the caller sees
 * it (use BRATS_LDM_OPTIONS_INIT); the library writes exactly that many bytes (fields it does
 * not know are zeroed).
 */
brats_ldm_status brats_ldm_options_init(brats_ldm_options *options, size_t struct_size);
#define BRATS_LDM_OPTIONS_INIT(options_ptr) \
    brats_ldm_options_init((options_ptr), sizeof(brats_ldm_options))

/*
 * Load a blob file and build a generator: validates the blob, plans and allocates every buffer.
 * path: NUL-terminated; bytes are used as is on Unix, must be UTF-8 elsewhere.
 * options: may be NULL for all defaults. On success *out receives the generator, on failure NULL.
 */
brats_ldm_status brats_ldm_create_from_path(const char *path, const brats_ldm_options *options,
                                            brats_ldm_generator **out);

/* Same from a blob held in memory; the bytes are copied, the caller may free them on return. */
brats_ldm_status brats_ldm_create_from_bytes(const void *data, size_t len,
                                             const brats_ldm_options *options,
                                             brats_ldm_generator **out);

/*
 * Memory plan. out_size: sizeof(*out) as the caller sees it; the library writes
 * min(out_size, its own size) bytes and refuses sizes smaller than this header's struct.
 */
brats_ldm_status brats_ldm_get_plan(const brats_ldm_generator *generator, brats_ldm_plan *out,
                                    size_t out_size);

/* Output description; out_size as for brats_ldm_get_plan. */
brats_ldm_status brats_ldm_get_output_info(const brats_ldm_generator *generator,
                                           brats_ldm_output_info *out, size_t out_size);

/* Number of floats one volume needs (C*D*H*W). */
brats_ldm_status brats_ldm_get_output_len(const brats_ldm_generator *generator, size_t *num_floats);

/*
 * Generate one volume for seed into out (C-order [C, D, H, W], float32). out_len is the buffer's
 * length in floats: at least brats_ldm_get_output_len; only that many are written. out must be
 * float-aligned. Same seed + same blob + same options + same backend give the same bytes (the
 * Rust API's Runtime::generate with the same seed gives the same bytes too). progress may be
 * NULL; user_data is passed to it unchanged. Allocates nothing. After BRATS_LDM_ERR_CANCELLED
 * the buffer's contents are unspecified; other errors are reported before anything is written.
 */
brats_ldm_status brats_ldm_generate(brats_ldm_generator *generator, uint64_t seed, float *out,
                                    size_t out_len, brats_ldm_progress_fn progress,
                                    void *user_data);

/*
 * Free a generator and everything it allocated. NULL is accepted (returns OK). A destroyed or
 * unknown handle returns BRATS_LDM_ERR_INVALID_HANDLE; a generator in use returns
 * BRATS_LDM_ERR_BUSY and is NOT freed.
 */
brats_ldm_status brats_ldm_destroy(brats_ldm_generator *generator);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BRATS_LDM_H */
