/*
 * nccl.h -- mixccl's rendering of the NCCL C API, implemented by libmixccl.so (and by
 * the same library built as libnccl.so.2 and librccl.so.1, the names programs linked
 * against NVIDIA's NCCL or AMD's RCCL load).
 *
 * Written by hand as the contract of the library: same names, enum values, types,
 * struct layouts and signatures as NVIDIA's nccl.h of the version below, so a program
 * or framework written against NCCL builds and runs unchanged. Every function is also
 * exported with a `p` prefix (pncclAllReduce, ...), as NCCL does for profilers. The
 * host entry points of NCCL's device API (nccl_device/core.h) that frameworks link
 * to are declared here too, near the end.
 *
 * What differs from NCCL (see README.md, "C ABI" and "Device memory"):
 *  - Buffers may be host memory or device memory of any vendor runtime mixccl can
 *    load (CUDA, HIP, MUSA, ACL, CNRT); each call finds out which, per buffer, and
 *    ranks of one communicator may use different vendors. Calls on device buffers
 *    are STREAM-ORDERED, as in NCCL: enqueued on `stream` (cudaStream_t or the
 *    vendor's equivalent; NULL is the default stream), they return at once, read
 *    their input after all earlier work on the stream, and later work on it sees the
 *    result; buffers must stay valid until the stream has passed the call. Calls on
 *    host buffers only are host-synchronous (result in place on return).
 *    MIXCCL_LAUNCH=sync makes device calls host-synchronous too.
 *  - Device buffers move through pinned host memory (all_reduce, broadcast and
 *    reduce pipelined in pieces of MIXCCL_PIPELINE_BYTES).
 *  - ncclResult_t has ncclTimeout = 8 (as current upstream nccl.h). mixccl returns
 *    ncclTimeout when a peer stays silent past MIXCCL_TIMEOUT, ncclRemoteError when a
 *    peer is lost (connection closed or reset), ncclInvalidUsage for mismatched calls
 *    and for a communicator the application aborted, ncclInvalidArgument for bad
 *    arguments (ncclGetLastError says which), ncclSystemError for failed system calls
 *    and bootstrap failures, ncclInternalError for bugs.
 *  - Nonblocking communicators (config.blocking = 0, as NCCL): ncclCommInitRankConfig,
 *    ncclCommSplit and ncclCommShrink return ncclInProgress and build the
 *    communicator on a thread of its own; collectives, ncclSend/ncclRecv, ncclGroupEnd
 *    and ncclCommFinalize on it return ncclInProgress and run on that thread, in call
 *    order. Poll ncclCommGetAsyncError(comm, &state) until state leaves
 *    ncclInProgress: ncclSuccess means every call made so far has finished and its
 *    data is in place; any other value is the error that stopped the communicator.
 *    Buffers must stay valid until then. Differences from NCCL: NCCL asks for a poll
 *    to ncclSuccess before the next call; mixccl also accepts further calls while
 *    earlier ones are pending and queues them (a call made while init is still in
 *    progress is refused with ncclInvalidArgument, as in NCCL). ncclCommAbort stops a
 *    call in flight within about 100 ms but cannot interrupt an init in progress: it
 *    returns at once and that init ends on its own (at most MIXCCL_TIMEOUT later) and
 *    frees what it made. ncclCommSplit with NCCL_SPLIT_NOCOLOR takes part in the
 *    split before it returns (there is no new communicator to poll).
 *  - Blocking communicators (the default) never return ncclInProgress; a call on
 *    host buffers that returns ncclSuccess has its data in place. A failed
 *    stream-ordered call's error is returned by ncclCommGetAsyncError and the next
 *    call; a stream is never held longer than MIXCCL_TIMEOUT + 1 s, and
 *    ncclCommAbort releases held streams at once.
 *  - ncclSend/ncclRecv and collectives between ncclGroupStart and ncclGroupEnd run at
 *    the outermost ncclGroupEnd: per communicator, the collectives first in call
 *    order, then all sends and receives together (so any pattern completes). Buffers
 *    must stay valid until ncclGroupEnd returns. A group that spans several
 *    communicators runs each communicator on its own thread, so one thread can drive
 *    all ranks of ncclCommInitAll.
 *  - Outside a group a call blocks until its peers take part: the ranks of
 *    ncclCommInitAll need a thread each (or one group for all of them).
 *    ncclCommInitRank and ncclCommSplit run at once even inside a group, so one
 *    thread cannot initialise several blocking ranks that way: use ncclCommInitAll,
 *    or nonblocking configs (each init returns ncclInProgress; then poll them all).
 *  - ncclCommCuDevice reports the device given at init: devlist[i] (or i) for
 *    ncclCommInitAll, the parent's for ncclCommSplit, and for ncclCommInitRank the
 *    caller's current device in the first loaded runtime (0 without one).
 *  - ncclMemAlloc allocates on the current device of the first loaded runtime
 *    (CUDA first), else 64-byte aligned host memory; ncclCommRegister is a no-op.
 *  - ncclRedOpCreatePreMulSum: the collective scales a copy of its input by the
 *    scalar, then sums (one extra pass and one temporary buffer per call).
 *  - Not provided (ncclInvalidUsage, ncclGetLastError says why; nothing is written):
 *    the device API (ncclDevCommCreate, device pointers of windows), one-sided
 *    ncclPutSignal / ncclSignal / ncclWaitSignal.
 *    Not declared at all: NCCL 2.30's
 *    parameter API (ncclParamBind, ncclParamGet*, ncclParamDumpAll) and the deprecated
 *    ncclResetDebugInit.
 *
 * Include cuda_runtime.h (if at all) before this header: cudaStream_t is declared
 * here as an opaque pointer unless a CUDA header already did.
 */
#ifndef NCCL_H_
#define NCCL_H_

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define NCCL_MAJOR 2
#define NCCL_MINOR 30
#define NCCL_PATCH 7
#define NCCL_SUFFIX ""

#define NCCL_VERSION_CODE 23007
#define NCCL_VERSION(X, Y, Z) \
  (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))

/* Defined by mixccl's nccl.h only, so code can tell the two apart. */
#define NCCL_MIXCCL 1

#if !defined(CUDART_VERSION) && !defined(__CUDA_RUNTIME_H__) && !defined(__DRIVER_TYPES_H__)
typedef struct CUstream_st* cudaStream_t;
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque handle to a communicator. */
typedef struct ncclComm* ncclComm_t;
/* Opaque handle to a registered memory window (ncclCommWindowRegister). */
typedef struct ncclWindow_vidmem* ncclWindow_t;
#define NCCL_COMM_NULL NULL

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

/* Error type. */
typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
  ncclTimeout = 8,
  ncclNumResults = 9
} ncclResult_t;

#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_CONFIG_UNDEF_PTR NULL
#define NCCL_SPLIT_NOCOLOR -1
#define NCCL_UNDEF_FLOAT -1.0f

/* The magic of NCCL_CONFIG_INITIALIZER. */
#define NCCL_API_MAGIC 0xcafebeef

/* winFlags of ncclCommWindowRegister (accepted; mixccl treats them all alike). */
#define NCCL_WIN_DEFAULT 0x00
#define NCCL_WIN_COLL_SYMMETRIC 0x01
#define NCCL_WIN_STRICT_ORDERING 0x02
#define NCCL_WIN_REQUIRED_ALIGNMENT 4096

/* Values of ncclConfig_t.CTAPolicy (ignored: mixccl launches no kernels). */
#define NCCL_CTA_POLICY_DEFAULT 0x00
#define NCCL_CTA_POLICY_EFFICIENCY 0x01
#define NCCL_CTA_POLICY_ZERO 0x02

/* shrinkFlags of ncclCommShrink. */
#define NCCL_SHRINK_DEFAULT 0x00
#define NCCL_SHRINK_ABORT 0x01

/* revokeFlags of ncclCommRevoke. */
#define NCCL_REVOKE_DEFAULT 0x00

/* Communicator configuration (layout of NCCL 2.30; each release only appends
 * fields). mixccl checks size, magic and blocking (0, 1 or undefined) and ignores the
 * other fields; a shorter struct from an older nccl.h is read up to its size. */
typedef struct ncclConfig_v23000 {
  /* attributes that users should never touch. */
  size_t size;
  unsigned int magic;
  unsigned int version;
  /* attributes that users are able to customize. */
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
  int splitShare;
  int trafficClass;
  const char* commName;
  int collnetEnable;
  int CTAPolicy;
  int shrinkShare;
  int nvlsCTAs;
  int nChannelsPerNetPeer;
  int nvlinkCentricSched;
  int graphUsageMode;
  int numRmaCtx;
  int maxP2pPeers;
  int graphStreamOrdering;
} ncclConfig_t;

/* Every ncclConfig_t must start from this initializer. */
#define NCCL_CONFIG_INITIALIZER {                           \
  sizeof(ncclConfig_t),         /* size */                 \
  NCCL_API_MAGIC,               /* magic */                \
  NCCL_VERSION_CODE,            /* version */              \
  NCCL_CONFIG_UNDEF_INT,        /* blocking */             \
  NCCL_CONFIG_UNDEF_INT,        /* cgaClusterSize */       \
  NCCL_CONFIG_UNDEF_INT,        /* minCTAs */              \
  NCCL_CONFIG_UNDEF_INT,        /* maxCTAs */              \
  NCCL_CONFIG_UNDEF_PTR,        /* netName */              \
  NCCL_CONFIG_UNDEF_INT,        /* splitShare */           \
  NCCL_CONFIG_UNDEF_INT,        /* trafficClass */         \
  NCCL_CONFIG_UNDEF_PTR,        /* commName */             \
  NCCL_CONFIG_UNDEF_INT,        /* collnetEnable */        \
  NCCL_CONFIG_UNDEF_INT,        /* CTAPolicy */            \
  NCCL_CONFIG_UNDEF_INT,        /* shrinkShare */          \
  NCCL_CONFIG_UNDEF_INT,        /* nvlsCTAs */             \
  NCCL_CONFIG_UNDEF_INT,        /* nChannelsPerNetPeer */  \
  NCCL_CONFIG_UNDEF_INT,        /* nvlinkCentricSched */   \
  NCCL_CONFIG_UNDEF_INT,        /* graphUsageMode */       \
  NCCL_CONFIG_UNDEF_INT,        /* numRmaCtx */            \
  NCCL_CONFIG_UNDEF_INT,        /* maxP2pPeers */          \
  NCCL_CONFIG_UNDEF_INT         /* graphStreamOrdering */  \
}

/* What ncclGroupSimulateEnd reports (layout of NCCL 2.22 onwards). */
typedef struct ncclSimInfo_v22200 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  /* The group's estimated duration in microseconds (NCCL_UNDEF_FLOAT when unknown). */
  float estimatedTime;
} ncclSimInfo_t;

/* Every ncclSimInfo_t must start from this initializer. */
#define NCCL_SIM_INFO_INITIALIZER {                   \
  sizeof(ncclSimInfo_t),        /* size */           \
  0x74685283,                   /* magic */          \
  NCCL_VERSION_CODE,            /* version */        \
  NCCL_UNDEF_FLOAT              /* estimatedTime */  \
}

/* Host memory, 64-byte aligned; free with ncclMemFree. */
ncclResult_t  ncclMemAlloc(void** ptr, size_t size);
ncclResult_t pncclMemAlloc(void** ptr, size_t size);

ncclResult_t  ncclMemFree(void* ptr);
ncclResult_t pncclMemFree(void* ptr);

/* Stores NCCL_VERSION_CODE of this library in *version. */
ncclResult_t  ncclGetVersion(int* version);
ncclResult_t pncclGetVersion(int* version);

/* Starts the rendezvous for a new communicator in this process and describes it in
 * *uniqueId (root address and a secret token). Call it once, on one rank, and share
 * the 128 bytes with every rank (MPI_Bcast, a file, ...). The interface is
 * MIXCCL_SOCKET_IFNAME, else NCCL_SOCKET_IFNAME, else the first non-loopback one. */
ncclResult_t  ncclGetUniqueId(ncclUniqueId* uniqueId);
ncclResult_t pncclGetUniqueId(ncclUniqueId* uniqueId);

/* Joins communicator commId as rank of nranks; returns once every rank has joined
 * (or fails with ncclTimeout naming the missing ranks in ncclGetLastError). config may
 * be NULL. With config->blocking = 0 it returns ncclInProgress at once with *comm set;
 * poll ncclCommGetAsyncError(*comm) until ncclSuccess (or the init's error) before
 * any other call on it (queries and calls return ncclInvalidArgument until then). */
ncclResult_t  ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config);
ncclResult_t pncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config);

ncclResult_t  ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t pncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);

/* ndev ranks in this process, joined in memory; comm[i] is rank i. devlist may be NULL.
 * Drive each rank from its own thread, or issue all ranks' calls in one group. */
ncclResult_t  ncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist);
ncclResult_t pncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist);

/* Marks the communicator finalized: later calls other than destroy fail with
 * ncclInvalidUsage. A nonblocking communicator with calls still queued returns
 * ncclInProgress and finishes them; poll ncclCommGetAsyncError. */
ncclResult_t  ncclCommFinalize(ncclComm_t comm);
ncclResult_t pncclCommFinalize(ncclComm_t comm);

/* Frees the communicator (NULL is a no-op). A nonblocking communicator's queued calls
 * are waited for first, at most MIXCCL_TIMEOUT + 1 s; past that they are aborted and
 * destroy returns ncclTimeout (the communicator is freed all the same). A handle used
 * after destroy or abort is reported as ncclInvalidUsage, unless a newer
 * communicator took over its address. */
ncclResult_t  ncclCommDestroy(ncclComm_t comm);
ncclResult_t pncclCommDestroy(ncclComm_t comm);

/* Stops the communicator's calls in flight on other threads or in the background
 * (they end with ncclInvalidUsage within about 100 ms; a nonblocking communicator's
 * queued calls are dropped) and frees it (NULL is a no-op). Waits at most 2 s; an
 * init in progress is not waited for (see the top of this file). */
ncclResult_t  ncclCommAbort(ncclComm_t comm);
ncclResult_t pncclCommAbort(ncclComm_t comm);

/* (from NCCL 2.29) Stops every call in flight or queued on this communicator and,
 * through a notice on its links, on every peer that can be reached: each fails with
 * ncclInvalidUsage ("revoked by rank r"), as do later calls. The communicator stays
 * valid for ncclCommShrink (an empty list keeps every rank), ncclCommGrow and
 * ncclCommDestroy; nothing is aborted. revokeFlags: NCCL_REVOKE_DEFAULT. */
ncclResult_t  ncclCommRevoke(ncclComm_t comm, int revokeFlags);
ncclResult_t pncclCommRevoke(ncclComm_t comm, int revokeFlags);

/* Ranks with the same color form a new communicator, ordered by key then by rank;
 * NCCL_SPLIT_NOCOLOR sets *newcomm to NULL. Every rank must call it. config may be
 * NULL (inherit, blocking mode included). With a nonblocking config it returns
 * ncclInProgress and *newcomm is polled like a new communicator; a nonblocking parent
 * must have no calls pending (ncclInvalidArgument). */
ncclResult_t  ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config);
ncclResult_t pncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config);

/* A communicator of every rank but the excludeRanksCount ranks in excludeRanksList
 * (from NCCL 2.27), usable after a peer was lost: no new unique id, the survivors
 * reconnect and renumber in rank order. Every survivor must call it with the same
 * list. shrinkFlags: NCCL_SHRINK_DEFAULT or NCCL_SHRINK_ABORT (the parent's calls in
 * flight are aborted first); config may be NULL (inherit, blocking mode included).
 * Nonblocking: returns ncclInProgress; poll *newcomm. */
ncclResult_t  ncclCommShrink(ncclComm_t comm, int* excludeRanksList, int excludeRanksCount,
    ncclComm_t* newcomm, ncclConfig_t* config, int shrinkFlags);
ncclResult_t pncclCommShrink(ncclComm_t comm, int* excludeRanksList, int excludeRanksCount,
    ncclComm_t* newcomm, ncclConfig_t* config, int shrinkFlags);

/* (from NCCL 2.29) Growing a communicator by new ranks. One member calls
 * ncclCommGetUniqueId and hands the id out of band to the other members and to the
 * new ranks. Members call ncclCommGrow(comm, nRanks, &id, -1, &newcomm, config) and
 * keep their ranks; new ranks call ncclCommGrow(NULL, nRanks, &id, rank, &newcomm,
 * config) with rank in oldSize..nRanks-1. The new communicator re-plans for its
 * members; the parent is left as it was. An id of another (or an older)
 * communicator, an id from ncclGetUniqueId, or a rank out of range is
 * ncclInvalidArgument at once; a rank claimed twice is refused by the rendezvous. */
ncclResult_t  ncclCommGetUniqueId(ncclComm_t comm, ncclUniqueId* uniqueId);
ncclResult_t pncclCommGetUniqueId(ncclComm_t comm, ncclUniqueId* uniqueId);

ncclResult_t  ncclCommGrow(ncclComm_t comm, int nRanks, const ncclUniqueId* uniqueId, int rank,
    ncclComm_t* newcomm, ncclConfig_t* config);
ncclResult_t pncclCommGrow(ncclComm_t comm, int nRanks, const ncclUniqueId* uniqueId, int rank,
    ncclComm_t* newcomm, ncclConfig_t* config);

/* ncclCommInitRankConfig with nId unique ids, one rendezvous root behind each
 * (each from ncclGetUniqueId, on any rank): every rank must pass the same nId ids
 * in the same order. Rank r joins the root of one id (NCCL's rule: contiguous
 * slices of nranks / nId ranks, the first nranks % nId roots one rank more); the
 * roots exchange their slices through the root of commIds[0]. 1 <= nId <= nranks.
 * A rank whose ids differ (another nId, other ids, another order) is refused with
 * a message saying so; a root that never answers fails its ranks after
 * MIXCCL_TIMEOUT. */
ncclResult_t  ncclCommInitRankScalable(ncclComm_t* newcomm, int nranks, int myrank, int nId,
    ncclUniqueId* commIds, ncclConfig_t* config);
ncclResult_t pncclCommInitRankScalable(ncclComm_t* newcomm, int nranks, int myrank, int nId,
    ncclUniqueId* commIds, ncclConfig_t* config);

/* A static string for each result code. */
const char*  ncclGetErrorString(ncclResult_t result);
const char* pncclGetErrorString(ncclResult_t result);

/* The message of the last error on the calling thread; if it has none, the error that
 * stopped comm (if any); else "". Valid until the thread's next error. */
const char*  ncclGetLastError(ncclComm_t comm);
const char* pncclGetLastError(ncclComm_t comm);

/* The code of the error that stopped the communicator; else ncclInProgress while a
 * nonblocking communicator has an init or calls queued or running; else ncclSuccess.
 * Never blocks. */
ncclResult_t  ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError);
ncclResult_t pncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError);

ncclResult_t  ncclCommCount(const ncclComm_t comm, int* count);
ncclResult_t pncclCommCount(const ncclComm_t comm, int* count);

ncclResult_t  ncclCommCuDevice(const ncclComm_t comm, int* device);
ncclResult_t pncclCommCuDevice(const ncclComm_t comm, int* device);

ncclResult_t  ncclCommUserRank(const ncclComm_t comm, int* rank);
ncclResult_t pncclCommUserRank(const ncclComm_t comm, int* rank);

/* Accepted for compatibility; host buffers need no registration. */
ncclResult_t  ncclCommRegister(const ncclComm_t comm, void* buff, size_t size, void** handle);
ncclResult_t pncclCommRegister(const ncclComm_t comm, void* buff, size_t size, void** handle);

ncclResult_t  ncclCommDeregister(const ncclComm_t comm, void* handle);
ncclResult_t pncclCommDeregister(const ncclComm_t comm, void* handle);

/* flags of ncclCommSuspend. */
#define NCCL_SUSPEND_MEM 0x01

/* Suspends the communicator: with NCCL_SUSPEND_MEM, every call on it but
 * ncclCommResume, queries, ncclCommMemStats, destroy and abort fails with
 * ncclInvalidUsage until ncclCommResume (flags 0 changes nothing). mixccl holds no
 * device memory of its own, so nothing is released. Other flag bits are
 * ncclInvalidArgument. Resuming a communicator that is not suspended is a no-op. */
ncclResult_t  ncclCommSuspend(ncclComm_t comm, int flags);
ncclResult_t pncclCommSuspend(ncclComm_t comm, int flags);

ncclResult_t  ncclCommResume(ncclComm_t comm);
ncclResult_t pncclCommResume(ncclComm_t comm);

/* What ncclCommMemStats reports. */
typedef enum {
  /* Device memory the communicator could release when suspended (bytes). */
  ncclStatGpuMemSuspend = 0,
  /* 1 while suspended with NCCL_SUSPEND_MEM, else 0. */
  ncclStatGpuMemSuspended = 1,
  /* Device memory the communicator keeps when suspended (bytes). */
  ncclStatGpuMemPersist = 2,
  /* All device memory the communicator holds (bytes). */
  ncclStatGpuMemTotal = 3
} ncclCommMemStat_t;

/* Stores one statistic in *value. mixccl allocates no device memory (device buffers
 * are staged through pinned host memory), so the byte counts are 0. */
ncclResult_t  ncclCommMemStats(ncclComm_t comm, ncclCommMemStat_t stat, uint64_t* value);
ncclResult_t pncclCommMemStats(ncclComm_t comm, ncclCommMemStat_t stat, uint64_t* value);

/* Registers size bytes at buff as a window of comm. Collectives on window memory
 * work like on any other buffer; the window itself only answers ncclWinGetUserPtr
 * (its device pointers and one-sided calls are not provided, see the top of this
 * file). Deregister each window once, with the communicator it was made for. */
ncclResult_t  ncclCommWindowRegister(ncclComm_t comm, void* buff, size_t size, ncclWindow_t* win, int winFlags);
ncclResult_t pncclCommWindowRegister(ncclComm_t comm, void* buff, size_t size, ncclWindow_t* win, int winFlags);

ncclResult_t  ncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win);
ncclResult_t pncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win);

/* The buff given to ncclCommWindowRegister. */
ncclResult_t  ncclWinGetUserPtr(ncclComm_t comm, ncclWindow_t win, void** outUserPtr);
ncclResult_t pncclWinGetUserPtr(ncclComm_t comm, ncclWindow_t win, void** outUserPtr);

/* Reduction operation selector. */
typedef enum { ncclNumOps_dummy = 5 } ncclRedOp_dummy_t;
typedef enum {
  ncclSum = 0,
  ncclProd = 1,
  ncclMax = 2,
  ncclMin = 3,
  ncclAvg = 4,
  /* The number of built-in ops, and the least value of an op from ncclRedOpCreate*. */
  ncclNumOps = 5,
  /* The largest valid value for ncclRedOp_t. */
  ncclMaxRedOp = 0x7fffffff >> (32 - 8 * sizeof(ncclRedOp_dummy_t))
} ncclRedOp_t;

/* Data types. */
typedef enum {
  ncclInt8 = 0,
  ncclChar = 0,
  ncclUint8 = 1,
  ncclInt32 = 2,
  ncclInt = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6,
  ncclHalf = 6,
  ncclFloat32 = 7,
  ncclFloat = 7,
  ncclFloat64 = 8,
  ncclDouble = 8,
  ncclBfloat16 = 9,
  /* 8-bit floats (OCP formats, NVIDIA's): reductions accumulate in fp32 and round
   * once; mixccl.h adds AMD's FNUZ formats. */
  ncclFloat8e4m3 = 10,
  ncclFloat8e5m2 = 11,
  ncclNumTypes = 12
} ncclDataType_t;

/* Where the scalar of ncclRedOpCreatePreMulSum lives. */
typedef enum {
  /* Read while each collective runs (any host memory that stays valid). */
  ncclScalarDevice = 0,
  /* Read once, before ncclRedOpCreatePreMulSum returns. */
  ncclScalarHostImmediate = 1
} ncclScalarResidence_t;

/* An op that multiplies each input by *scalar (of type datatype), then sums. Valid for
 * comm and datatype only; free with ncclRedOpDestroy. */
ncclResult_t  ncclRedOpCreatePreMulSum(ncclRedOp_t* op, void* scalar, ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm);
ncclResult_t pncclRedOpCreatePreMulSum(ncclRedOp_t* op, void* scalar, ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm);

ncclResult_t  ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm);
ncclResult_t pncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm);

/*
 * Collectives. Each rank of the communicator calls the same ones in the same order.
 * Out-of-range datatype, op, root or peer values, NULL buffers with count > 0 and
 * partially overlapping buffers return ncclInvalidArgument before any data moves; the
 * communicator stays usable.
 */

/* recvbuff may be NULL except on root. In place if sendbuff == recvbuff. */
ncclResult_t  ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
    ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
    ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream);

/* (deprecated) In-place broadcast. */
ncclResult_t  ncclBcast(void* buff, size_t count, ncclDataType_t datatype, int root,
    ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclBcast(void* buff, size_t count, ncclDataType_t datatype, int root,
    ncclComm_t comm, cudaStream_t stream);

/* sendbuff is read on root only. In place if sendbuff == recvbuff. */
ncclResult_t  ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
    ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
    ncclComm_t comm, cudaStream_t stream);

/* In place if sendbuff == recvbuff. */
ncclResult_t  ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);

/* sendbuff holds nranks*recvcount elements. In place if
 * recvbuff == sendbuff + rank*recvcount elements. */
ncclResult_t  ncclReduceScatter(const void* sendbuff, void* recvbuff,
    size_t recvcount, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
    cudaStream_t stream);
ncclResult_t pncclReduceScatter(const void* sendbuff, void* recvbuff,
    size_t recvcount, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
    cudaStream_t stream);

/* recvbuff holds nranks*sendcount elements. In place if
 * sendbuff == recvbuff + rank*sendcount elements. */
ncclResult_t  ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
    ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
    ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);

/* Block j (count elements) of sendbuff goes to rank j; block i of recvbuff comes from
 * rank i. In place if sendbuff == recvbuff. */
ncclResult_t  ncclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);

/* Block i (count elements) of recvbuff on root comes from rank i; recvbuff is not
 * used elsewhere and may be NULL there. In place if sendbuff == recvbuff + root*count
 * on root. Runs as one group of sends and receives (so inside a group it is recorded
 * like them). */
ncclResult_t  ncclGather(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclGather(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);

/* Block i (count elements) of sendbuff on root goes to rank i; sendbuff is not used
 * elsewhere and may be NULL there. In place if recvbuff == sendbuff + root*count on
 * root. Runs as one group of sends and receives, as ncclGather. */
ncclResult_t  ncclScatter(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclScatter(const void* sendbuff, void* recvbuff, size_t count,
    ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);

/*
 * Point-to-point. Outside a group each call blocks until the peer takes part; between
 * ncclGroupStart and ncclGroupEnd they all run together at ncclGroupEnd.
 */
ncclResult_t  ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
    ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
    ncclComm_t comm, cudaStream_t stream);

ncclResult_t  ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
    ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
    ncclComm_t comm, cudaStream_t stream);

/*
 * One-sided calls on windows (from NCCL 2.29): not provided; each returns
 * ncclInvalidUsage without touching its arguments.
 */
ncclResult_t  ncclPutSignal(const void* localbuff, size_t count, ncclDataType_t datatype,
    int peer, ncclWindow_t peerWin, size_t peerWinOffset,
    int sigIdx, int ctx, unsigned int flags, ncclComm_t comm, cudaStream_t stream);
ncclResult_t pncclPutSignal(const void* localbuff, size_t count, ncclDataType_t datatype,
    int peer, ncclWindow_t peerWin, size_t peerWinOffset,
    int sigIdx, int ctx, unsigned int flags, ncclComm_t comm, cudaStream_t stream);

ncclResult_t  ncclSignal(int peer, int sigIdx, int ctx, unsigned int flags, ncclComm_t comm,
    cudaStream_t stream);
ncclResult_t pncclSignal(int peer, int sigIdx, int ctx, unsigned int flags, ncclComm_t comm,
    cudaStream_t stream);

/* How many signals ncclWaitSignal waits for from one peer, signal index and context. */
typedef struct {
  int opCnt;
  int peer;
  int sigIdx;
  int ctx;
} ncclWaitSignalDesc_t;

ncclResult_t  ncclWaitSignal(int nDesc, ncclWaitSignalDesc_t* signalDescs, ncclComm_t comm,
    cudaStream_t stream);
ncclResult_t pncclWaitSignal(int nDesc, ncclWaitSignalDesc_t* signalDescs, ncclComm_t comm,
    cudaStream_t stream);

/*
 * Groups nest (per thread); the outermost ncclGroupEnd runs what was recorded and
 * returns its first error. If a call inside the group failed, ncclGroupEnd runs
 * nothing and returns that call's error. The calls of nonblocking communicators are
 * queued on their threads instead, and ncclGroupEnd returns ncclInProgress: poll each
 * such communicator with ncclCommGetAsyncError.
 */
ncclResult_t  ncclGroupStart(void);
ncclResult_t pncclGroupStart(void);

ncclResult_t  ncclGroupEnd(void);
ncclResult_t pncclGroupEnd(void);

/* Ends the outermost group like ncclGroupEnd, but runs none of its calls and fills
 * *simInfo (made with NCCL_SIM_INFO_INITIALIZER) with their estimated time in
 * microseconds: the planner's model of each call (the algorithm it would choose on
 * that communicator), summed over the group. Inside a nested group it only closes
 * that level (estimatedTime is left alone; the outermost ncclGroupEnd runs the calls). */
ncclResult_t  ncclGroupSimulateEnd(ncclSimInfo_t* simInfo);
ncclResult_t pncclGroupSimulateEnd(ncclSimInfo_t* simInfo);

/*
 * Host entry points of NCCL's device API (nccl_device/core.h in NCCL), which
 * frameworks link to. mixccl has no device-side library: each returns
 * ncclInvalidUsage (ncclGetLastError says so) and writes nothing.
 */
struct ncclDevComm;
struct ncclDevCommRequirements;

ncclResult_t  ncclDevCommCreate(ncclComm_t comm, const struct ncclDevCommRequirements* reqs,
    struct ncclDevComm* outDevComm);
ncclResult_t pncclDevCommCreate(ncclComm_t comm, const struct ncclDevCommRequirements* reqs,
    struct ncclDevComm* outDevComm);

ncclResult_t  ncclDevCommDestroy(ncclComm_t comm, const struct ncclDevComm* devComm);
ncclResult_t pncclDevCommDestroy(ncclComm_t comm, const struct ncclDevComm* devComm);

ncclResult_t  ncclGetLsaMultimemDevicePointer(ncclWindow_t window, size_t offset, void** outPtr);
ncclResult_t pncclGetLsaMultimemDevicePointer(ncclWindow_t window, size_t offset, void** outPtr);

ncclResult_t  ncclGetPeerDevicePointer(ncclWindow_t window, size_t offset, int peer, void** outPtr);
ncclResult_t pncclGetPeerDevicePointer(ncclWindow_t window, size_t offset, int peer, void** outPtr);

#ifdef __cplusplus
} /* end extern "C" */
#endif

#endif /* NCCL_H_ */
