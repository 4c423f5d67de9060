/*
 * mixccl.h -- mixccl's extensions to the NCCL API (libmixccl.so). Includes nccl.h.
 */
#ifndef MIXCCL_H_
#define MIXCCL_H_

#include "nccl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Characters of a unique id in hex, with the terminating NUL. */
#define MIXCCL_UNIQUE_ID_HEX_BYTES (2 * NCCL_UNIQUE_ID_BYTES + 1)

/* Joins the job the launcher's environment describes, without MPI:
 *   MIXCCL_RANK, MIXCCL_NRANKS and MIXCCL_UNIQUE_ID (hex) or MIXCCL_ROOT=host:port;
 *   torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
 *   Open MPI (OMPI_COMM_WORLD_RANK/SIZE with MIXCCL_ROOT or MASTER_ADDR/PORT);
 *   Slurm (SLURM_PROCID, SLURM_NTASKS with MIXCCL_ROOT or MASTER_ADDR/PORT).
 * With an address, rank 0 starts the rendezvous there. Ask the new communicator for
 * its rank and size with ncclCommUserRank and ncclCommCount. */
ncclResult_t mixcclCommInitFromEnv(ncclComm_t* comm);

/* Writes the id as 256 lower-case hex characters and a NUL into
 * hex[MIXCCL_UNIQUE_ID_HEX_BYTES] (the text MIXCCL_UNIQUE_ID takes). */
ncclResult_t mixcclUniqueIdToHex(const ncclUniqueId* id, char* hex);

/* Parses the hex text of an id and checks its checksum (ncclInvalidArgument if bad). */
ncclResult_t mixcclUniqueIdFromHex(const char* hex, ncclUniqueId* id);

/* ---- Elastic communicators: drop a whole island, grow it back ----
 * Every rank outside the island calls these with the same names; a rank inside it
 * gets *newcomm = NULL and takes no part. Like ncclCommShrink with the island's
 * ranks excluded: no new unique id, the others renumber in rank order, the planner
 * re-chooses algorithms. ncclInvalidArgument when no rank matches. Blocking. To
 * admit the island again: ncclCommGetUniqueId on one member, then ncclCommGrow
 * (members: their communicator and rank -1; the island's ranks: NULL and a rank
 * from the old size up). */

/* Drops every rank on the nHosts hosts (a hostname, or the host identity of
 * MIXCCL_HOST_ID). */
ncclResult_t mixcclCommShrinkHosts(ncclComm_t comm, const char* const* hosts, int nHosts,
    ncclComm_t* newcomm);

/* Drops every rank whose device is of one of the nVendors vendors ("host", "cuda",
 * "hip", "musa", "acl", "cnrt"). */
ncclResult_t mixcclCommShrinkVendors(ncclComm_t comm, const char* const* vendors,
    int nVendors, ncclComm_t* newcomm);
/* ---- end of elastic communicators ---- */

/* mixccl's own data types, outside NCCL's ncclDataType_t range (0..ncclNumTypes):
 * the FNUZ fp8 formats AMD MI300 uses (no infinities, one NaN 0x80, no negative
 * zero, exponent bias one more than OCP's). ncclFloat8e4m3 / ncclFloat8e5m2 are the
 * OCP formats NVIDIA uses (e4m3 max 448, e5m2 max 57344); e4m3fnuz max 240,
 * e5m2fnuz max 57344. Ranks passing different fp8 formats to one call fail with
 * ncclInvalidUsage (a mismatch), never a converted result. Reductions of fp8 in
 * host memory accumulate in fp32 and round once to nearest-even, saturating to the
 * format's max (e4m3 and FNUZ also saturate infinities; e5m2 keeps them); NaN stays
 * NaN (see docs/algorithms.md). */
#define MIXCCL_DATA_TYPE(v) ((ncclDataType_t)(v))
#define mixcclFloat8e4m3fnuz MIXCCL_DATA_TYPE(64)
#define mixcclFloat8e5m2fnuz MIXCCL_DATA_TYPE(65)

/* Uneven collectives: block sizes differ by rank. Counts and displacements are in
 * elements, nranks of each, and must agree on every rank (recvcounts of
 * AllGatherV, sendcounts of ReduceScatterV; for AlltoAllV, what rank i sends rank j
 * is what j expects from i): ranks that disagree fail with a mismatch naming the
 * rank, never with wrong data. They run at once (host-synchronously after the
 * stream, not inside ncclGroupStart/End) on the ring, direct or pairwise schedule
 * the planner picks; device buffers are staged through host memory.
 *
 * AllGatherV: rank p's sendcount (= recvcounts[p]) elements land at
 *   recvbuff + displs[p]; in place when sendbuff == recvbuff + displs[rank]. */
ncclResult_t mixcclAllGatherV(const void* sendbuff, size_t sendcount, void* recvbuff,
                              const size_t recvcounts[], const size_t displs[],
                              ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);

/* ReduceScatterV: block p (sendcounts[p] elements at sendbuff + displs[p]) is
 * reduced over ranks into rank p's recvbuff (recvcount = sendcounts[rank]); in place
 * when recvbuff == sendbuff + displs[rank]. Built-in ops only. */
ncclResult_t mixcclReduceScatterV(const void* sendbuff, const size_t sendcounts[],
                                  const size_t displs[], void* recvbuff, size_t recvcount,
                                  ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                  cudaStream_t stream);

/* AlltoAllV: sendcounts[p] elements at sendbuff + sdispls[p] go to rank p; rank p's
 * block (recvcounts[p] elements) lands at recvbuff + rdispls[p]. Out of place only. */
ncclResult_t mixcclAlltoAllV(const void* sendbuff, const size_t sendcounts[],
                             const size_t sdispls[], void* recvbuff, const size_t recvcounts[],
                             const size_t rdispls[], ncclDataType_t datatype, ncclComm_t comm,
                             cudaStream_t stream);

/* Splits total into n shares in proportion to weights[n], identically on every
 * rank (integer arithmetic, largest remainders, ties to the lower index); the shares
 * sum to total. All-zero weights split evenly. */
ncclResult_t mixcclSplitByWeight(size_t total, const uint64_t weights[], size_t n,
                                 size_t shares[]);

#ifdef __cplusplus
} /* end extern "C" */
#endif

#endif /* MIXCCL_H_ */
