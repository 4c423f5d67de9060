"""Medians and ranges of a benches/peers/cpu_sitting.sh run: python3 cpu_sitting_summary.py OUT"""
import glob,re,statistics as st,sys
D=sys.argv[1] if len(sys.argv) > 1 else '/tmp/s23'
def mx(f,size):
    # returns (time_oop, busbw_oop, time_ip, busbw_ip)
    for l in open(f):
        p=l.split()
        if p and p[0]==str(size) and len(p)>=13:
            return float(p[5]),float(p[7]),float(p[9]),float(p[11])
def mpi(f,section,size):
    sec=None
    for l in open(f):
        if l.startswith('# MPI_Allreduce'): sec='ar'
        elif l.startswith('# MPI_Allgather'): sec='ag'
        p=l.split()
        if sec==section and p and p[0]==str(size) and 'skipped' not in l:
            return float(p[2]),float(p[4])
def gloo(f):
    for l in open(f):
        p=l.split()
        if p and p[0]=='33554432': return float(p[2]),float(p[4])
reps=sorted(set(re.findall(r'_(\d+)\.txt',' '.join(glob.glob(D+'/*_*.txt')))), key=int)
def med(xs): return st.median(xs), min(xs), max(xs)
M={}
def show(name, get, fmt='%.2f'):
    # A sitting with PART=tcp has no shared-memory files: their rows are left out.
    xs=[]
    for r in R:
        try: xs.append(get(r))
        except (OSError, TypeError): pass
    if not xs: return
    m,a,b=med(xs); M[name]=m; print(f"{name:45s} median {fmt%m}  range {fmt%a}-{fmt%b}  n={len(xs)}")
R=[r for r in reps]
show('mixccl shm allreduce 32M busbw oop', lambda r: mx(f'{D}/mx_allreduce_{r}.txt',33554432)[1])
show('mixccl shm allreduce 32M busbw ip', lambda r: mx(f'{D}/mx_allreduce_{r}.txt',33554432)[3])
show('mixccl shm allreduce 32M ring256K oop', lambda r: mx(f'{D}/mx_allreduce_ring256k_{r}.txt',33554432)[1])
show('mixccl shm allreduce 32M ring256K ip', lambda r: mx(f'{D}/mx_allreduce_ring256k_{r}.txt',33554432)[3])
show('ompi shm allreduce 32M busbw', lambda r: mpi(f'{D}/mpishm_{r}.txt','ar',33554432)[1])
show('mixccl shm allgather 32M busbw oop', lambda r: mx(f'{D}/mx_allgather_{r}.txt',33554432)[1])
show('mixccl shm allgather 32M busbw ip', lambda r: mx(f'{D}/mx_allgather_{r}.txt',33554432)[3])
for nt in ['1', '0']:
    show(f'mixccl allgather 32M NT={nt} oop', lambda r: mx(f'{D}/mx_allgather_nt{nt}_{r}.txt',33554432)[1])
    show(f'mixccl allgather 32M NT={nt} ip', lambda r: mx(f'{D}/mx_allgather_nt{nt}_{r}.txt',33554432)[3])
show('ompi shm allgather 32M busbw', lambda r: mpi(f'{D}/mpishm_{r}.txt','ag',33554432)[1])
show('mixccl shm allreduce 8B time us oop', lambda r: mx(f'{D}/mx_allreduce_{r}.txt',8)[0])
show('mixccl shm allreduce 8B time us ip', lambda r: mx(f'{D}/mx_allreduce_{r}.txt',8)[2])
show('ompi shm allreduce 8B time us', lambda r: mpi(f'{D}/mpishm_{r}.txt','ar',8)[0])
show('mixccl tcp allreduce 32M busbw oop', lambda r: mx(f'{D}/mxtcp_allreduce_{r}.txt',33554432)[1])
show('mixccl tcp allreduce 32M busbw ip', lambda r: mx(f'{D}/mxtcp_allreduce_{r}.txt',33554432)[3])
show('ompi tcp allreduce 32M busbw', lambda r: mpi(f'{D}/mpitcp_{r}.txt','ar',33554432)[1])
show('gloo allreduce 32M busbw', lambda r: gloo(f'{D}/gloo_{r}.txt')[1])
for mode in ['oop', 'ip']:
    t=M.get(f'mixccl tcp allreduce 32M busbw {mode}')
    for peer in ['ompi tcp allreduce 32M busbw', 'gloo allreduce 32M busbw']:
        if t and M.get(peer): print(f"ratio tcp {mode} / {peer.split()[0]}: {t/M[peer]:.2f}x")
