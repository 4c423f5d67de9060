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

#ifdef __cplusplus
} /* end extern "C" */
#endif

#endif /* MIXCCL_H_ */
