/* Real-GPU check of mixccl's C ABI on cudaMalloc'd buffers: N processes share one
 * GPU (mixccl allows it; NCCL does not), each runs the collectives on device
 * buffers written by an asynchronous copy on a non-blocking stream that is NOT
 * synchronised first (mixccl must wait for the stream's prior work), and checks
 * every element of every result against values computed here.
 *
 * Build (on a machine with the CUDA toolkit):
 *   nvcc -O2 -I include tests/gpu/cuda_c_abi.c -o cuda_c_abi -L DIR -lmixccl -Xlinker -rpath=DIR
 * Run: ./cuda_c_abi NRANKS COUNT   (exit 0 when every rank checked out) */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "nccl.h"

static int rank = -1;
static int failures;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "rank %d: %s: %s\n", rank, #x, cudaGetErrorString(e_)); exit(2); } } while (0)
#define NK(x) do { ncclResult_t r_ = (x); if (r_ != ncclSuccess) { \
    fprintf(stderr, "rank %d: %s: %s: %s\n", rank, #x, ncclGetErrorString(r_), ncclGetLastError(NULL)); exit(3); } } while (0)

static void expect(const char *what, const float *got, size_t n, float (*want)(size_t, int), int arg) {
    size_t wrong = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want(i, arg)) { if (!wrong) first = i; wrong++; }
    }
    if (wrong) {
        fprintf(stderr, "rank %d: %s: %zu of %zu wrong, first at %zu: got %g want %g\n", rank, what, wrong, n,
                first, got[first], want(first, arg));
        failures++;
    } else {
        printf("rank %d: %s: %zu elements OK\n", rank, what, n);
    }
}

static int nranks;
/* Rank r's input element i: small integers, so float sums are exact. */
static float input(size_t i, int r) { return (float)((r + 1) + (int)(i % 7)); }
static float sum_all(size_t i, int unused) {
    (void)unused;
    float s = 0;
    for (int r = 0; r < nranks; r++) s += input(i, r);
    return s;
}
static float gathered(size_t k, int count) { return input(k % (size_t)count, (int)(k / (size_t)count)); }
static float from_root(size_t i, int root) { return input(i, root); }
static float scattered(size_t i, int count) { return sum_all((size_t)rank * (size_t)count + i, 0); }
static float from_left(size_t i, int unused) { (void)unused; return input(i, (rank + nranks - 1) % nranks); }

static void run(ncclUniqueId id, size_t count) {
    CK(cudaSetDevice(0));
    ncclComm_t comm;
    NK(ncclCommInitRank(&comm, nranks, id, rank));
    int dev = -1;
    NK(ncclCommCuDevice(comm, &dev));
    if (dev != 0) { fprintf(stderr, "rank %d: ncclCommCuDevice gave %d, want 0\n", rank, dev); failures++; }
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    size_t all = count * (size_t)nranks;
    float *h = malloc(all * sizeof(float)), *d_in, *d_out;
    CK(cudaMalloc((void **)&d_in, all * sizeof(float)));
    CK(cudaMalloc((void **)&d_out, all * sizeof(float)));

    /* all-reduce, out of place, input uploaded asynchronously and not synchronised */
    for (size_t i = 0; i < count; i++) h[i] = input(i, rank);
    CK(cudaMemcpyAsync(d_in, h, count * sizeof(float), cudaMemcpyHostToDevice, s));
    NK(ncclAllReduce(d_in, d_out, count, ncclFloat, ncclSum, comm, s));
    memset(h, 0, count * sizeof(float));
    CK(cudaMemcpy(h, d_out, count * sizeof(float), cudaMemcpyDeviceToHost));
    expect("allreduce sum (out of place)", h, count, sum_all, 0);

    /* all-reduce, in place: the max over ranks of equal sums is that sum */
    NK(ncclAllReduce(d_out, d_out, count, ncclFloat, ncclMax, comm, s));
    CK(cudaMemcpy(h, d_out, count * sizeof(float), cudaMemcpyDeviceToHost));
    expect("allreduce max (in place)", h, count, sum_all, 0);

    /* all-gather */
    for (size_t i = 0; i < count; i++) h[i] = input(i, rank);
    CK(cudaMemcpyAsync(d_in, h, count * sizeof(float), cudaMemcpyHostToDevice, s));
    NK(ncclAllGather(d_in, d_out, count, ncclFloat, comm, s));
    CK(cudaMemcpy(h, d_out, all * sizeof(float), cudaMemcpyDeviceToHost));
    expect("allgather", h, all, gathered, (int)count);

    /* broadcast from the last rank, in place */
    int root = nranks - 1;
    for (size_t i = 0; i < count; i++) h[i] = input(i, rank);
    CK(cudaMemcpyAsync(d_in, h, count * sizeof(float), cudaMemcpyHostToDevice, s));
    NK(ncclBroadcast(d_in, d_in, count, ncclFloat, root, comm, s));
    CK(cudaMemcpy(h, d_in, count * sizeof(float), cudaMemcpyDeviceToHost));
    expect("broadcast (in place)", h, count, from_root, root);

    /* reduce-scatter: every rank holds all blocks of the summed input */
    for (size_t i = 0; i < all; i++) h[i] = input(i, rank);
    CK(cudaMemcpyAsync(d_in, h, all * sizeof(float), cudaMemcpyHostToDevice, s));
    NK(ncclReduceScatter(d_in, d_out, count, ncclFloat, ncclSum, comm, s));
    CK(cudaMemcpy(h, d_out, count * sizeof(float), cudaMemcpyDeviceToHost));
    expect("reducescatter", h, count, scattered, (int)count);

    /* send to the right, receive from the left, in one group */
    for (size_t i = 0; i < count; i++) h[i] = input(i, rank);
    CK(cudaMemcpyAsync(d_in, h, count * sizeof(float), cudaMemcpyHostToDevice, s));
    NK(ncclGroupStart());
    NK(ncclSend(d_in, count, ncclFloat, (rank + 1) % nranks, comm, s));
    NK(ncclRecv(d_out, count, ncclFloat, (rank + nranks - 1) % nranks, comm, s));
    NK(ncclGroupEnd());
    CK(cudaMemcpy(h, d_out, count * sizeof(float), cudaMemcpyDeviceToHost));
    expect("send/recv ring", h, count, from_left, 0);

    /* ncclMemAlloc gives device memory on the current device, usable by the calls */
    void *m = NULL;
    NK(ncclMemAlloc(&m, count * sizeof(float)));
    struct cudaPointerAttributes attr;
    CK(cudaPointerGetAttributes(&attr, m));
    if (attr.type != cudaMemoryTypeDevice || attr.device != 0) {
        fprintf(stderr, "rank %d: ncclMemAlloc memory has type %d device %d\n", rank, (int)attr.type, attr.device);
        failures++;
    }
    for (size_t i = 0; i < count; i++) h[i] = input(i, rank);
    CK(cudaMemcpy(m, h, count * sizeof(float), cudaMemcpyHostToDevice));
    NK(ncclAllReduce(m, m, count, ncclFloat, ncclSum, comm, 0));
    CK(cudaMemcpy(h, m, count * sizeof(float), cudaMemcpyDeviceToHost));
    expect("allreduce on ncclMemAlloc memory (default stream)", h, count, sum_all, 0);
    NK(ncclMemFree(m));

    NK(ncclCommDestroy(comm));
    CK(cudaFree(d_in));
    CK(cudaFree(d_out));
    CK(cudaStreamDestroy(s));
    free(h);
}

int main(int argc, char **argv) {
    nranks = argc > 1 ? atoi(argv[1]) : 2;
    size_t count = argc > 2 ? (size_t)atoll(argv[2]) : 1000003;
    ncclUniqueId id;
    NK(ncclGetUniqueId(&id)); /* before fork, and before any CUDA call */
    for (int r = 0; r < nranks; r++) {
        if (fork() == 0) {
            rank = r;
            run(id, count);
            printf("rank %d: %s\n", r, failures ? "FAILED" : "all checks passed");
            fflush(stdout);
            _exit(failures ? 1 : 0);
        }
    }
    int bad = 0;
    for (int r = 0; r < nranks; r++) {
        int st = 0;
        wait(&st);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    printf("%d of %d ranks failed\n", bad, nranks);
    return bad ? 1 : 0;
}
