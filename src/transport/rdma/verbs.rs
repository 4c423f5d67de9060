//! The real [`Verbs`]: a device port found by [`probe`], and per peer one
//! completion queue with its channel, one RC queue pair per lane and one
//! registered staging region ([`HcaVerbs`]). Every call into libibverbs goes
//! through [`check_ptr`] or [`check_rc`], so a failure is always an
//! `io::Error` naming the verbs call.

use crate::transport::rdma::hca::HcaFilter;
use crate::transport::rdma::ibv::*;
use crate::transport::rdma::link::{Completion, Verbs};
use crate::transport::rdma::wire::{Offer, QpAddr};
use std::alloc::Layout;
use std::ffi::{c_int, c_void, CStr};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

/// `Ok(p)` for a non-null pointer from `call`, else the thread's errno, named.
fn check_ptr<T>(p: *mut T, call: &str) -> io::Result<*mut T> {
    if p.is_null() {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{call} failed: {e}")))
    } else {
        Ok(p)
    }
}

/// `Ok(())` for a zero return from `call`; verbs return an errno value (or -1 and
/// set errno), either way named.
fn check_rc(rc: c_int, call: &str) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        -1 => {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{call} failed: {e}")))
        }
        rc => {
            let e = io::Error::from_raw_os_error(rc.abs());
            Err(io::Error::new(e.kind(), format!("{call} failed: {e}")))
        }
    }
}

/// An opened device with its protection domain.
pub(crate) struct Device {
    lib: &'static IbvLib,
    ctx: *mut IbvContext,
    pd: *mut IbvPd,
    /// Device-wide failure seen on the async event queue (shared by all links).
    fatal: Mutex<Option<String>>,
}

// SAFETY: libibverbs objects may be used from any thread; `fatal` is behind a mutex.
unsafe impl Send for Device {}
// SAFETY: as above; the raw handles are only passed to thread-safe verbs calls.
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every link (queue pairs, CQs, MRs) holds an Arc of this device and
        // has been dropped, so pd and ctx are unused; each is released once.
        unsafe {
            (self.lib.ibv_dealloc_pd)(self.pd);
            (self.lib.ibv_close_device)(self.ctx);
        }
    }
}

impl Device {
    /// Reads pending async events (non-blocking) and remembers device-wide failures.
    fn poll_events(&self, port: u8) -> Option<String> {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut ev = IbvAsyncEvent {
                element: 0,
                event_type: 0,
            };
            // SAFETY: ctx is open; its async fd is non-blocking (set in probe), so
            // this returns -1 at once when no event is pending.
            if unsafe { (self.lib.ibv_get_async_event)(self.ctx, &mut ev) } != 0 {
                break;
            }
            let t = ev.event_type;
            let on_port = ev.element as u32 as u8 == port;
            if t == IBV_EVENT_DEVICE_FATAL || (t == IBV_EVENT_PORT_ERR && on_port) {
                fatal.get_or_insert_with(|| format!("{} (event {t})", event_name(t)));
            }
            // SAFETY: `ev` was filled by ibv_get_async_event and is acked once.
            unsafe { (self.lib.ibv_ack_async_event)(&mut ev) };
        }
        fatal.clone()
    }
}

/// The port this rank uses, and what peers need to reach it.
pub(crate) struct Port {
    pub dev: Arc<Device>,
    /// `mlx5_0:1`.
    pub name: String,
    pub port: u8,
    pub link_layer: u8,
    pub mtu: u8,
    pub lid: u16,
    pub gid: [u8; 16],
    pub gid_index: u8,
}

/// Finds the first active port that `filter` selects. The error is the reason
/// RDMA is unavailable, in words (no library, no kernel support, no device, no
/// active port).
pub(crate) fn probe(lib_path: &str, filter: &HcaFilter, gid_index: u8) -> Result<Port, String> {
    let lib = IbvLib::get(lib_path)?;
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out-parameter; the list is freed below.
    let list = unsafe { (lib.ibv_get_device_list)(&mut n) };
    if list.is_null() {
        let e = io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::ENOSYS) {
            ": the kernel has no InfiniBand/RDMA support"
        } else {
            ""
        };
        return Err(format!("ibv_get_device_list failed: {e}{hint}"));
    }
    // SAFETY: `list` holds `n` device pointers (NULL-terminated) until freed below.
    let devices: Vec<*mut IbvDevice> = (0..n.max(0) as usize)
        .map(|i| unsafe { *list.add(i) })
        .collect();
    let mut seen = Vec::new();
    let mut found = None;
    for dev in devices {
        // SAFETY: a device from the live list; the name is NUL-terminated.
        let name = unsafe {
            let p = (lib.ibv_get_device_name)(dev);
            if p.is_null() {
                continue;
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        if let Some(p) = open_port(lib, dev, &name, filter, gid_index, &mut seen) {
            found = Some(p);
            break;
        }
    }
    // SAFETY: the list came from ibv_get_device_list; opened contexts stay valid.
    unsafe { (lib.ibv_free_device_list)(list) };
    found.ok_or_else(|| {
        if n == 0 {
            "no RDMA devices".to_string()
        } else if seen.is_empty() {
            format!("MIXCCL_IB_HCA selects none of the {n} RDMA devices")
        } else {
            format!("no active port ({})", seen.join(", "))
        }
    })
}

/// Opens `dev` and returns its first usable port, noting unusable ones in `seen`.
fn open_port(
    lib: &'static IbvLib,
    dev: *mut IbvDevice,
    name: &str,
    filter: &HcaFilter,
    gid_index: u8,
    seen: &mut Vec<String>,
) -> Option<Port> {
    // SAFETY: `dev` is from the live device list.
    let ctx = unsafe { (lib.ibv_open_device)(dev) };
    if ctx.is_null() {
        seen.push(format!(
            "{name}: ibv_open_device failed: {}",
            io::Error::last_os_error()
        ));
        return None;
    }
    let mut pick = None;
    for port in 1..=32u8 {
        // SAFETY: IbvPortAttr is plain data, larger than what ibv_query_port writes.
        let mut attr: IbvPortAttr = unsafe { std::mem::zeroed() };
        // SAFETY: ctx is open and attr is a valid out-parameter.
        if unsafe { (lib.ibv_query_port)(ctx, port, &mut attr) } != 0 {
            break;
        }
        if !filter.selects(name, port) {
            continue;
        }
        if attr.state != IBV_PORT_ACTIVE {
            seen.push(format!("{name}:{port} state {}", attr.state));
            continue;
        }
        let link_layer = match attr.link_layer {
            0 | IBV_LINK_LAYER_INFINIBAND => IBV_LINK_LAYER_INFINIBAND,
            IBV_LINK_LAYER_ETHERNET => IBV_LINK_LAYER_ETHERNET,
            l => {
                seen.push(format!("{name}:{port} link layer {l}"));
                continue;
            }
        };
        let mut gid = IbvGid::default();
        // SAFETY: ctx is open and gid is a 16-byte out-parameter.
        let rc = unsafe { (lib.ibv_query_gid)(ctx, port, c_int::from(gid_index), &mut gid) };
        if rc != 0 || (link_layer == IBV_LINK_LAYER_ETHERNET && gid.raw == [0; 16]) {
            seen.push(format!(
                "{name}:{port} has no GID at MIXCCL_IB_GID_INDEX={gid_index}"
            ));
            continue;
        }
        pick = Some((
            port,
            link_layer,
            attr.active_mtu.clamp(1, 5) as u8,
            attr.lid,
            gid.raw,
        ));
        break;
    }
    let Some((port, link_layer, mtu, lid, gid)) = pick else {
        // SAFETY: opened above, nothing created on it.
        unsafe { (lib.ibv_close_device)(ctx) };
        return None;
    };
    // SAFETY: ctx is open.
    let pd = unsafe { (lib.ibv_alloc_pd)(ctx) };
    if pd.is_null() {
        seen.push(format!(
            "{name}: ibv_alloc_pd failed: {}",
            io::Error::last_os_error()
        ));
        // SAFETY: opened above, nothing created on it.
        unsafe { (lib.ibv_close_device)(ctx) };
        return None;
    }
    // SAFETY: ctx is open; its async_fd is a descriptor it owns. Non-blocking, so
    // device events are read without waiting.
    unsafe { set_nonblocking((*ctx).async_fd) };
    Some(Port {
        dev: Arc::new(Device {
            lib,
            ctx,
            pd,
            fatal: Mutex::new(None),
        }),
        name: format!("{name}:{port}"),
        port,
        link_layer,
        mtu,
        lid,
        gid,
        gid_index,
    })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor the caller owns; failures only leave it blocking,
    // which the callers never rely on being otherwise for correctness of data.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// A random 24-bit packet sequence number.
fn random_psn() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() as u32) & 0xff_ffff
}

/// One peer's queue pairs (one per lane), completion queue and staging region.
pub(crate) struct HcaVerbs {
    port: Arc<Port>,
    channel: *mut IbvCompChannel,
    cq: *mut IbvCq,
    qps: Vec<*mut IbvQp>,
    psns: Vec<u32>,
    mr: *mut IbvMr,
    mem: *mut u8,
    layout: Layout,
    slots: usize,
    slot_bytes: usize,
    remote_addr: u64,
    remote_rkey: u32,
    wc: Vec<IbvWc>,
}

// SAFETY: the handles and the staging region belong to this value alone; verbs
// calls are thread-safe, and the link is driven by one thread at a time.
unsafe impl Send for HcaVerbs {}

impl HcaVerbs {
    /// Creates the completion queue, `lanes` queue pairs in INIT and the staging
    /// region (per lane: `slots` send slots, then `slots` receive slots).
    pub(crate) fn create(
        port: Arc<Port>,
        lanes: usize,
        slots: usize,
        slot_bytes: usize,
    ) -> io::Result<HcaVerbs> {
        let lib = port.dev.lib;
        let len = 2 * lanes * slots * slot_bytes;
        if len == 0 || slots > u16::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("RDMA staging of {lanes} lanes x {slots} slots x {slot_bytes} bytes"),
            ));
        }
        let layout = Layout::from_size_align(len, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut v = HcaVerbs {
            port: port.clone(),
            channel: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            qps: Vec::with_capacity(lanes),
            psns: Vec::with_capacity(lanes),
            mr: std::ptr::null_mut(),
            mem: std::ptr::null_mut(),
            layout,
            slots,
            slot_bytes,
            remote_addr: 0,
            remote_rkey: 0,
            wc: vec![IbvWc::default(); 32],
        };
        let ctx = port.dev.ctx;
        // SAFETY (whole block): ctx and pd are open for the life of `port`; every
        // pointer passed is either from these calls or a valid local; what is
        // created is recorded in `v` at once, so Drop releases it on any error.
        unsafe {
            v.mem = std::alloc::alloc_zeroed(layout);
            if v.mem.is_null() {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("allocating {len} bytes of RDMA staging"),
                ));
            }
            v.mr = check_ptr(
                (lib.ibv_reg_mr)(
                    port.dev.pd,
                    v.mem.cast::<c_void>(),
                    len,
                    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
                ),
                "ibv_reg_mr",
            )?;
            v.channel = check_ptr(
                (lib.ibv_create_comp_channel)(ctx),
                "ibv_create_comp_channel",
            )?;
            set_nonblocking((*v.channel).fd);
            let cqe = (lanes * slots * 4 + 16).min(c_int::MAX as usize) as c_int;
            v.cq = check_ptr(
                (lib.ibv_create_cq)(ctx, cqe, std::ptr::null_mut(), v.channel, 0),
                "ibv_create_cq",
            )?;
            for _ in 0..lanes {
                let mut init = IbvQpInitAttr {
                    qp_context: std::ptr::null_mut(),
                    send_cq: v.cq,
                    recv_cq: v.cq,
                    srq: std::ptr::null_mut(),
                    cap: IbvQpCap {
                        max_send_wr: (2 * slots) as u32,
                        max_recv_wr: (2 * slots) as u32,
                        max_send_sge: 1,
                        max_recv_sge: 1,
                        max_inline_data: 0,
                    },
                    qp_type: IBV_QPT_RC,
                    sq_sig_all: 0,
                };
                let qp = check_ptr((lib.ibv_create_qp)(port.dev.pd, &mut init), "ibv_create_qp")?;
                v.qps.push(qp);
                v.psns.push(random_psn());
                let mut attr = IbvQpAttr {
                    qp_state: IBV_QPS_INIT,
                    pkey_index: 0,
                    port_num: port.port,
                    qp_access_flags: (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE) as u32,
                    ..IbvQpAttr::default()
                };
                check_rc(
                    (lib.ibv_modify_qp)(
                        qp,
                        &mut attr,
                        IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS,
                    ),
                    "ibv_modify_qp(INIT)",
                )?;
            }
        }
        Ok(v)
    }

    /// This side's connection data.
    pub(crate) fn offer(&self) -> Offer {
        let p = &self.port;
        Offer {
            link_layer: p.link_layer,
            mtu: p.mtu,
            lid: p.lid,
            gid: p.gid,
            slot_bytes: self.slot_bytes as u32,
            slots: self.slots as u16,
            addr: self.mem as u64,
            // SAFETY: mr is registered for the life of self.
            rkey: unsafe { (*self.mr).rkey },
            qps: self
                .qps
                .iter()
                .zip(&self.psns)
                // SAFETY: each qp is live for the life of self.
                .map(|(&qp, &psn)| QpAddr {
                    qpn: unsafe { (*qp).qp_num },
                    psn,
                })
                .collect(),
        }
    }

    /// Moves every queue pair to RTR then RTS towards the peer's `remote` offer.
    pub(crate) fn connect(&mut self, remote: &Offer) -> io::Result<()> {
        let lib = self.port.dev.lib;
        self.remote_addr = remote.addr;
        self.remote_rkey = remote.rkey;
        let roce = self.port.link_layer == IBV_LINK_LAYER_ETHERNET;
        for (i, &qp) in self.qps.iter().enumerate() {
            let r = remote.qps[i];
            let mut ah = IbvAhAttr {
                dlid: if roce { 0 } else { remote.lid },
                port_num: self.port.port,
                ..IbvAhAttr::default()
            };
            if roce {
                ah.is_global = 1;
                ah.grh = IbvGlobalRoute {
                    dgid: IbvGid { raw: remote.gid },
                    sgid_index: self.port.gid_index,
                    hop_limit: 255,
                    ..IbvGlobalRoute::default()
                };
            }
            let mut rtr = IbvQpAttr {
                qp_state: IBV_QPS_RTR,
                path_mtu: u32::from(self.port.mtu.min(remote.mtu)),
                dest_qp_num: r.qpn,
                rq_psn: r.psn,
                max_dest_rd_atomic: 1,
                min_rnr_timer: 12,
                ah_attr: ah,
                ..IbvQpAttr::default()
            };
            let mut rts = IbvQpAttr {
                qp_state: IBV_QPS_RTS,
                timeout: 18,
                retry_cnt: 7,
                rnr_retry: 7,
                sq_psn: self.psns[i],
                max_rd_atomic: 1,
                ..IbvQpAttr::default()
            };
            // SAFETY: qp is live; the attrs are valid locals for the calls.
            unsafe {
                check_rc(
                    (lib.ibv_modify_qp)(
                        qp,
                        &mut rtr,
                        IBV_QP_STATE
                            | IBV_QP_AV
                            | IBV_QP_PATH_MTU
                            | IBV_QP_DEST_QPN
                            | IBV_QP_RQ_PSN
                            | IBV_QP_MAX_DEST_RD_ATOMIC
                            | IBV_QP_MIN_RNR_TIMER,
                    ),
                    "ibv_modify_qp(RTR)",
                )?;
                check_rc(
                    (lib.ibv_modify_qp)(
                        qp,
                        &mut rts,
                        IBV_QP_STATE
                            | IBV_QP_TIMEOUT
                            | IBV_QP_RETRY_CNT
                            | IBV_QP_RNR_RETRY
                            | IBV_QP_SQ_PSN
                            | IBV_QP_MAX_QP_RD_ATOMIC,
                    ),
                    "ibv_modify_qp(RTS)",
                )?;
            }
        }
        Ok(())
    }

    /// Byte offset of `slot` of `lane` (send or receive half) in the region, if
    /// `off + len` bytes of it lie inside the slot.
    fn at(&self, lane: usize, slot: usize, recv: bool, off: usize, len: usize) -> Option<usize> {
        (lane < self.qps.len() && slot < self.slots && off + len <= self.slot_bytes).then(|| {
            (2 * lane + usize::from(recv)) * self.slots * self.slot_bytes
                + slot * self.slot_bytes
                + off
        })
    }
}

impl Verbs for HcaVerbs {
    fn fill_slot(&mut self, lane: usize, slot: usize, src: &[u8]) {
        if let Some(at) = self.at(lane, slot, false, 0, src.len()) {
            // SAFETY: `at..at + len` is a send slot inside the region (checked by
            // `at`); the NIC reads it only while a write from it is in flight, and the
            // link reuses a slot only after that write completed.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.mem.add(at), src.len()) };
        }
    }

    fn read_slot(&self, lane: usize, slot: usize, off: usize, dst: &mut [u8]) {
        if let Some(at) = self.at(lane, slot, true, off, dst.len()) {
            // SAFETY: inside a receive slot (checked by `at`) that the peer filled and
            // will not write again until this side returns its credit.
            unsafe { std::ptr::copy_nonoverlapping(self.mem.add(at), dst.as_mut_ptr(), dst.len()) };
        }
    }

    fn write_imm(
        &mut self,
        lane: usize,
        wr_id: u64,
        slot: usize,
        len: usize,
        imm: u32,
    ) -> io::Result<()> {
        let (Some(local), Some(remote)) = (
            self.at(lane, slot, false, 0, len),
            self.at(lane, slot, true, 0, len),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {slot} of lane {lane} with {len} bytes is outside the staging"),
            ));
        };
        let mut sge = IbvSge {
            addr: self.mem as u64 + local as u64,
            length: len as u32,
            // SAFETY: mr is registered for the life of self.
            lkey: unsafe { (*self.mr).lkey },
        };
        let mut wr = IbvSendWr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: if len == 0 {
                std::ptr::null_mut()
            } else {
                &mut sge
            },
            num_sge: c_int::from(len != 0),
            opcode: IBV_WR_RDMA_WRITE_WITH_IMM,
            send_flags: IBV_SEND_SIGNALED,
            imm_data: imm.to_be(),
            rdma_remote_addr: self.remote_addr + remote as u64,
            rdma_rkey: self.remote_rkey,
            _wr_rest: [0; 5],
            _qp_type: [0; 2],
            _bind_mw_tso: [0; 6],
        };
        // SAFETY: the qp is live; wr and sge are valid for the call (the provider
        // copies them into the send queue before returning).
        check_rc(
            unsafe { self.port.dev.lib.post_send(self.qps[lane], &mut wr) },
            "ibv_post_send",
        )
    }

    fn post_recv(&mut self, lane: usize, wr_id: u64) -> io::Result<()> {
        let Some(&qp) = self.qps.get(lane) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such lane"));
        };
        let mut wr = IbvRecvWr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
        };
        // SAFETY: as in write_imm.
        check_rc(
            unsafe { self.port.dev.lib.post_recv(qp, &mut wr) },
            "ibv_post_recv",
        )
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        loop {
            // SAFETY: cq is live; wc is a buffer of wc.len() entries.
            let n = unsafe { self.port.dev.lib.poll_cq(self.cq, &mut self.wc) };
            if n < 0 {
                return Err(io::Error::other(format!("ibv_poll_cq returned {n}")));
            }
            let n = n as usize;
            out.extend(self.wc[..n].iter().map(|w| Completion {
                wr_id: w.wr_id,
                status: w.status,
                vendor_err: w.vendor_err,
                recv: w.opcode & IBV_WC_RECV != 0,
                byte_len: w.byte_len,
                imm: u32::from_be(w.imm_data),
            }));
            if n < self.wc.len() {
                return Ok(());
            }
        }
    }

    fn arm(&mut self) -> io::Result<()> {
        let lib = self.port.dev.lib;
        let mut events = 0u32;
        loop {
            let mut cq = std::ptr::null_mut();
            let mut ctx = std::ptr::null_mut();
            // SAFETY: the channel is live and non-blocking: -1 (EAGAIN) when empty.
            if unsafe { (lib.ibv_get_cq_event)(self.channel, &mut cq, &mut ctx) } != 0 {
                break;
            }
            events += 1;
        }
        // SAFETY: cq is live; acks exactly the events just taken (ibv_destroy_cq
        // waits for every event to be acked).
        unsafe {
            if events > 0 {
                (lib.ibv_ack_cq_events)(self.cq, events);
            }
            check_rc(lib.req_notify_cq(self.cq, false), "ibv_req_notify_cq")
        }
    }

    fn wait_fd(&self) -> RawFd {
        // SAFETY: the channel is live for the life of self.
        unsafe { (*self.channel).fd }
    }

    fn fatal(&mut self) -> Option<String> {
        self.port
            .dev
            .poll_events(self.port.port)
            .map(|e| format!("{e} on {}", self.port.name))
    }
}

impl Drop for HcaVerbs {
    fn drop(&mut self) {
        let lib = self.port.dev.lib;
        // SAFETY: each handle was created in `create` and is released once, in
        // dependency order (QPs, CQ, channel, MR, memory); nulls were never created.
        unsafe {
            for &qp in &self.qps {
                (lib.ibv_destroy_qp)(qp);
            }
            if !self.cq.is_null() {
                (lib.ibv_destroy_cq)(self.cq);
            }
            if !self.channel.is_null() {
                (lib.ibv_destroy_comp_channel)(self.channel);
            }
            if !self.mr.is_null() {
                (lib.ibv_dereg_mr)(self.mr);
            }
            if !self.mem.is_null() {
                std::alloc::dealloc(self.mem, self.layout);
            }
        }
    }
}
