/*
 * generate.c — example program for the brats-ldm C ABI: load a weight blob, print the output
 * geometry and memory plan, generate one volume for a seed with a progress callback, and write
 * it as raw native-endian float32 (C-order [C, D, H, W]).
 *
 *   cargo build -p ldm-runtime --release
 *   cc -std=c99 -I runtime/include examples/c/generate.c target/release/libldm_runtime.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o generate
 *   (or link the shared library: -L target/release -lldm_runtime, with an rpath or LD_LIBRARY_PATH)
 *   ./generate model.blob volume.f32 42 [steps [threads]]
 *
 * runtime/tests/capi_c.rs builds and runs it and checks its bytes against the Rust API.
 */
#include "brats_ldm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, brats_ldm_status status) {
    fprintf(stderr, "generate: %s failed: %s: %s\n", what, brats_ldm_status_string(status),
            brats_ldm_last_error());
    return 1;
}

/* Parses a non-negative decimal number; returns 0 on success. */
static int parse_u64(const char *text, uint64_t *value) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        return 1;
    }
    *value = (uint64_t)v;
    return 0;
}

static int32_t on_progress(const brats_ldm_progress *p, void *user_data) {
    unsigned *calls = (unsigned *)user_data;
    *calls += 1;
    if (p->stage == BRATS_LDM_STAGE_SAMPLING) {
        fprintf(stderr, "\rstep %u/%u (t=%d)", p->step + 1, p->total_steps, p->timestep);
    } else {
        fprintf(stderr, "\rdecoding...          \n");
    }
    return 0; /* non-zero would cancel */
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s BLOB OUT.f32 SEED [STEPS [THREADS]]\n", argv[0]);
        return 2;
    }
    uint64_t seed = 0, steps = 0, threads = 0;
    if (parse_u64(argv[3], &seed) || (argc > 4 && parse_u64(argv[4], &steps)) ||
        (argc > 5 && parse_u64(argv[5], &threads)) || steps > UINT32_MAX || threads > UINT32_MAX) {
        fprintf(stderr, "generate: SEED, STEPS and THREADS must be non-negative integers\n");
        return 2;
    }

    uint32_t major = 0, minor = 0, patch = 0;
    brats_ldm_status st = brats_ldm_version(&major, &minor, &patch);
    if (st != BRATS_LDM_OK) return fail("brats_ldm_version", st);
    if (major != BRATS_LDM_VERSION_MAJOR) {
        fprintf(stderr, "generate: library %s does not match header major version %d\n",
                brats_ldm_version_string(), BRATS_LDM_VERSION_MAJOR);
        return 1;
    }
    fprintf(stderr, "brats-ldm library %s\n", brats_ldm_version_string());

    brats_ldm_options opts;
    st = BRATS_LDM_OPTIONS_INIT(&opts);
    if (st != BRATS_LDM_OK) return fail("brats_ldm_options_init", st);
    opts.steps = (uint32_t)steps;
    opts.threads = (uint32_t)threads;

    brats_ldm_generator *gen = NULL;
    st = brats_ldm_create_from_path(argv[1], &opts, &gen);
    if (st != BRATS_LDM_OK) return fail("brats_ldm_create_from_path", st);

    brats_ldm_output_info info;
    brats_ldm_plan plan;
    if ((st = brats_ldm_get_output_info(gen, &info, sizeof info)) != BRATS_LDM_OK ||
        (st = brats_ldm_get_plan(gen, &plan, sizeof plan)) != BRATS_LDM_OK) {
        fail("query", st);
        brats_ldm_destroy(gen);
        return 1;
    }
    fprintf(stderr,
            "output [%u, %u, %u, %u] (%" PRIu64 " floats), spacing %.3g x %.3g x %.3g mm, %s, "
            "intensity [%g, %g], latent [%u, %u, %u, %u], %u steps\n",
            info.shape[0], info.shape[1], info.shape[2], info.shape[3], info.num_floats,
            info.spacing_mm[0], info.spacing_mm[1], info.spacing_mm[2], info.orientation,
            info.intensity_range[0], info.intensity_range[1], info.latent_shape[0],
            info.latent_shape[1], info.latent_shape[2], info.latent_shape[3], info.steps);
    fprintf(stderr, "plan: weights %" PRIu64 " B, arena %" PRIu64 " B, workspace %" PRIu64
                    " B, total %" PRIu64 " B\n",
            plan.weight_bytes, plan.arena_bytes, plan.workspace_bytes, plan.total_bytes);

    size_t n = 0;
    st = brats_ldm_get_output_len(gen, &n);
    if (st != BRATS_LDM_OK || n != info.num_floats) {
        fail("brats_ldm_get_output_len", st);
        brats_ldm_destroy(gen);
        return 1;
    }
    float *volume = malloc(n * sizeof(float));
    if (volume == NULL) {
        fprintf(stderr, "generate: out of memory for %zu floats\n", n);
        brats_ldm_destroy(gen);
        return 1;
    }
    unsigned calls = 0;
    st = brats_ldm_generate(gen, seed, volume, n, on_progress, &calls);
    int rc = 0;
    if (st != BRATS_LDM_OK) {
        rc = fail("brats_ldm_generate", st);
    } else if (calls != info.steps + 1) {
        fprintf(stderr, "generate: expected %u progress calls, got %u\n", info.steps + 1, calls);
        rc = 1;
    } else {
        FILE *f = fopen(argv[2], "wb");
        if (f == NULL || fwrite(volume, sizeof(float), n, f) != n || fclose(f) != 0) {
            fprintf(stderr, "generate: cannot write %s: %s\n", argv[2], strerror(errno));
            rc = 1;
        } else {
            fprintf(stderr, "wrote %s\n", argv[2]);
        }
    }
    free(volume);
    st = brats_ldm_destroy(gen);
    if (st != BRATS_LDM_OK) rc = fail("brats_ldm_destroy", st);
    return rc;
}
