//! libibverbs, loaded at run time: the few struct layouts and entry points mixccl
//! uses, written from rdma-core's public `infiniband/verbs.h` (ABI of
//! `IBVERBS_1.1`, stable since 2007), and the loader.
//!
//! Nothing here links against rdma-core: [`IbvLib::get`] opens
//! `MIXCCL_IBVERBS_LIB` or `libibverbs.so.1` once per process through
//! [`crate::foreign`] (`RTLD_NOW | RTLD_LOCAL`) and binds every exported function it
//! needs, as NCCL's `ibvsymbols.cc` does. `ibv_post_send`,
//! `ibv_post_recv`, `ibv_poll_cq` and `ibv_req_notify_cq` are `static inline` in the
//! header (calls through `ibv_context::ops`), so they are not symbols of the
//! library; [`IbvLib`] makes the same indirect calls. Only the fields mixccl
//! reads or writes are named; the rest is padding of the header's size, checked
//! against the header by the `layouts` test where the header is installed.
//!
//! All `unsafe` of the RDMA transport is here and in `verbs.rs`.

use crate::foreign::{Library, Source};
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::Mutex;

/// `struct ibv_device` (opaque).
#[repr(C)]
pub(crate) struct IbvDevice {
    _opaque: [u8; 0],
}
/// `struct ibv_pd` (opaque).
#[repr(C)]
pub(crate) struct IbvPd {
    _opaque: [u8; 0],
}

/// `struct ibv_context`: `device`, then `struct ibv_context_ops` (32 function
/// pointers), then descriptors. `ops` indices are those of verbs.h.
#[repr(C)]
pub(crate) struct IbvContext {
    pub device: *mut IbvDevice,
    pub ops: [*const c_void; 32],
    pub cmd_fd: c_int,
    pub async_fd: c_int,
}
/// `ibv_context_ops::poll_cq`.
const OP_POLL_CQ: usize = 11;
/// `ibv_context_ops::req_notify_cq`.
const OP_REQ_NOTIFY_CQ: usize = 12;
/// `ibv_context_ops::post_send`.
const OP_POST_SEND: usize = 25;
/// `ibv_context_ops::post_recv`.
const OP_POST_RECV: usize = 26;

/// `struct ibv_comp_channel`.
#[repr(C)]
pub(crate) struct IbvCompChannel {
    pub context: *mut IbvContext,
    pub fd: c_int,
    pub refcnt: c_int,
}

/// `struct ibv_cq` (only its first field is read).
#[repr(C)]
pub(crate) struct IbvCq {
    pub context: *mut IbvContext,
}

/// `struct ibv_qp` up to `qp_num`.
#[repr(C)]
pub(crate) struct IbvQp {
    pub context: *mut IbvContext,
    pub qp_context: *mut c_void,
    pub pd: *mut IbvPd,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut c_void,
    pub handle: u32,
    pub qp_num: u32,
}

/// `struct ibv_mr`.
#[repr(C)]
pub(crate) struct IbvMr {
    pub context: *mut IbvContext,
    pub pd: *mut IbvPd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `union ibv_gid`: 16 bytes, 8-aligned (it overlays two `__be64`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IbvGid {
    pub raw: [u8; 16],
}

/// `struct ibv_port_attr`, up to `flags`; the tail is room for fields newer
/// headers add (the exported `ibv_query_port` writes only the compat part).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IbvPortAttr {
    pub state: u32,
    pub max_mtu: u32,
    pub active_mtu: u32,
    pub gid_tbl_len: c_int,
    pub port_cap_flags: u32,
    pub max_msg_sz: u32,
    pub bad_pkey_cntr: u32,
    pub qkey_viol_cntr: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub sm_lid: u16,
    pub lmc: u8,
    pub max_vl_num: u8,
    pub sm_sl: u8,
    pub subnet_timeout: u8,
    pub init_type_reply: u8,
    pub active_width: u8,
    pub active_speed: u8,
    pub phys_state: u8,
    pub link_layer: u8,
    pub flags: u8,
    pub tail: [u8; 80],
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct IbvQpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub(crate) struct IbvQpInitAttr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut c_void,
    pub cap: IbvQpCap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
}

/// `struct ibv_global_route`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct IbvGlobalRoute {
    pub dgid: IbvGid,
    pub flow_label: u32,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

/// `struct ibv_ah_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct IbvAhAttr {
    pub grh: IbvGlobalRoute,
    pub dlid: u16,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
}

/// `struct ibv_qp_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct IbvQpAttr {
    pub qp_state: u32,
    pub cur_qp_state: u32,
    pub path_mtu: u32,
    pub path_mig_state: u32,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: c_uint,
    pub cap: IbvQpCap,
    pub ah_attr: IbvAhAttr,
    pub alt_ah_attr: IbvAhAttr,
    pub pkey_index: u16,
    pub alt_pkey_index: u16,
    pub en_sqd_async_notify: u8,
    pub sq_draining: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub port_num: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub alt_port_num: u8,
    pub alt_timeout: u8,
    pub rate_limit: u32,
}

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct IbvSge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_send_wr`: `wr.rdma` is the first 12 bytes of `wr`; the trailing
/// unions (`qp_type`, `bind_mw`/`tso`) are unused and zero.
#[repr(C)]
pub(crate) struct IbvSendWr {
    pub wr_id: u64,
    pub next: *mut IbvSendWr,
    pub sg_list: *mut IbvSge,
    pub num_sge: c_int,
    pub opcode: u32,
    pub send_flags: c_uint,
    /// `__be32`, network byte order.
    pub imm_data: u32,
    pub rdma_remote_addr: u64,
    pub rdma_rkey: u32,
    pub _wr_rest: [u32; 5],
    pub _qp_type: [u32; 2],
    pub _bind_mw_tso: [u64; 6],
}

/// `struct ibv_recv_wr`.
#[repr(C)]
pub(crate) struct IbvRecvWr {
    pub wr_id: u64,
    pub next: *mut IbvRecvWr,
    pub sg_list: *mut IbvSge,
    pub num_sge: c_int,
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct IbvWc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// `__be32`, network byte order.
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: c_uint,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

/// `struct ibv_async_event`.
#[repr(C)]
pub(crate) struct IbvAsyncEvent {
    pub element: u64,
    pub event_type: u32,
}

// Values of the header's enums and flags that mixccl uses.
pub(crate) const IBV_QPT_RC: u32 = 2;
pub(crate) const IBV_QPS_INIT: u32 = 1;
pub(crate) const IBV_QPS_RTR: u32 = 2;
pub(crate) const IBV_QPS_RTS: u32 = 3;
pub(crate) const IBV_QP_STATE: c_int = 1;
pub(crate) const IBV_QP_ACCESS_FLAGS: c_int = 8;
pub(crate) const IBV_QP_PKEY_INDEX: c_int = 16;
pub(crate) const IBV_QP_PORT: c_int = 32;
pub(crate) const IBV_QP_AV: c_int = 128;
pub(crate) const IBV_QP_PATH_MTU: c_int = 256;
pub(crate) const IBV_QP_TIMEOUT: c_int = 512;
pub(crate) const IBV_QP_RETRY_CNT: c_int = 1024;
pub(crate) const IBV_QP_RNR_RETRY: c_int = 2048;
pub(crate) const IBV_QP_RQ_PSN: c_int = 4096;
pub(crate) const IBV_QP_MAX_QP_RD_ATOMIC: c_int = 8192;
pub(crate) const IBV_QP_MIN_RNR_TIMER: c_int = 32768;
pub(crate) const IBV_QP_SQ_PSN: c_int = 65536;
pub(crate) const IBV_QP_MAX_DEST_RD_ATOMIC: c_int = 131072;
pub(crate) const IBV_QP_DEST_QPN: c_int = 1048576;
pub(crate) const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub(crate) const IBV_ACCESS_REMOTE_WRITE: c_int = 2;
pub(crate) const IBV_WR_RDMA_WRITE_WITH_IMM: u32 = 1;
pub(crate) const IBV_SEND_SIGNALED: c_uint = 2;
pub(crate) const IBV_WC_RECV: u32 = 128;
pub(crate) const IBV_PORT_ACTIVE: u32 = 4;
pub(crate) const IBV_LINK_LAYER_INFINIBAND: u8 = 1;
pub(crate) const IBV_LINK_LAYER_ETHERNET: u8 = 2;
pub(crate) const IBV_EVENT_QP_FATAL: u32 = 1;
pub(crate) const IBV_EVENT_DEVICE_FATAL: u32 = 8;
pub(crate) const IBV_EVENT_PORT_ERR: u32 = 10;

/// Name of an `enum ibv_wc_status` value, as verbs.h spells it.
pub(crate) fn wc_status_name(status: u32) -> &'static str {
    const NAMES: [&str; 24] = [
        "IBV_WC_SUCCESS",
        "IBV_WC_LOC_LEN_ERR",
        "IBV_WC_LOC_QP_OP_ERR",
        "IBV_WC_LOC_EEC_OP_ERR",
        "IBV_WC_LOC_PROT_ERR",
        "IBV_WC_WR_FLUSH_ERR",
        "IBV_WC_MW_BIND_ERR",
        "IBV_WC_BAD_RESP_ERR",
        "IBV_WC_LOC_ACCESS_ERR",
        "IBV_WC_REM_INV_REQ_ERR",
        "IBV_WC_REM_ACCESS_ERR",
        "IBV_WC_REM_OP_ERR",
        "IBV_WC_RETRY_EXC_ERR",
        "IBV_WC_RNR_RETRY_EXC_ERR",
        "IBV_WC_LOC_RDD_VIOL_ERR",
        "IBV_WC_REM_INV_RD_REQ_ERR",
        "IBV_WC_REM_ABORT_ERR",
        "IBV_WC_INV_EECN_ERR",
        "IBV_WC_INV_EEC_STATE_ERR",
        "IBV_WC_FATAL_ERR",
        "IBV_WC_RESP_TIMEOUT_ERR",
        "IBV_WC_GENERAL_ERR",
        "IBV_WC_TM_ERR",
        "IBV_WC_TM_RNDV_INCOMPLETE",
    ];
    NAMES
        .get(status as usize)
        .copied()
        .unwrap_or("unknown ibv_wc_status")
}

/// Name of an `enum ibv_event_type` value mixccl reacts to.
pub(crate) fn event_name(event: u32) -> &'static str {
    match event {
        IBV_EVENT_QP_FATAL => "IBV_EVENT_QP_FATAL",
        IBV_EVENT_DEVICE_FATAL => "IBV_EVENT_DEVICE_FATAL",
        IBV_EVENT_PORT_ERR => "IBV_EVENT_PORT_ERR",
        _ => "ibv async event",
    }
}

type PollCqFn = unsafe extern "C" fn(*mut IbvCq, c_int, *mut IbvWc) -> c_int;
type ReqNotifyFn = unsafe extern "C" fn(*mut IbvCq, c_int) -> c_int;
type PostSendFn = unsafe extern "C" fn(*mut IbvQp, *mut IbvSendWr, *mut *mut IbvSendWr) -> c_int;
type PostRecvFn = unsafe extern "C" fn(*mut IbvQp, *mut IbvRecvWr, *mut *mut IbvRecvWr) -> c_int;

crate::foreign::foreign_api! {
    /// The exported libibverbs functions mixccl calls, resolved once.
    pub(crate) struct IbvLib {
        ibv_get_device_list: "ibv_get_device_list" => fn(*mut c_int) -> *mut *mut IbvDevice;
        ibv_free_device_list: "ibv_free_device_list" => fn(*mut *mut IbvDevice) -> ();
        ibv_get_device_name: "ibv_get_device_name" => fn(*mut IbvDevice) -> *const c_char;
        ibv_open_device: "ibv_open_device" => fn(*mut IbvDevice) -> *mut IbvContext;
        ibv_close_device: "ibv_close_device" => fn(*mut IbvContext) -> c_int;
        ibv_query_port: "ibv_query_port" => fn(*mut IbvContext, u8, *mut IbvPortAttr) -> c_int;
        ibv_query_gid: "ibv_query_gid" => fn(*mut IbvContext, u8, c_int, *mut IbvGid) -> c_int;
        ibv_alloc_pd: "ibv_alloc_pd" => fn(*mut IbvContext) -> *mut IbvPd;
        ibv_dealloc_pd: "ibv_dealloc_pd" => fn(*mut IbvPd) -> c_int;
        ibv_reg_mr: "ibv_reg_mr" => fn(*mut IbvPd, *mut c_void, usize, c_int) -> *mut IbvMr;
        ibv_dereg_mr: "ibv_dereg_mr" => fn(*mut IbvMr) -> c_int;
        ibv_create_comp_channel: "ibv_create_comp_channel" => fn(*mut IbvContext) -> *mut IbvCompChannel;
        ibv_destroy_comp_channel: "ibv_destroy_comp_channel" => fn(*mut IbvCompChannel) -> c_int;
        ibv_create_cq: "ibv_create_cq" => fn(*mut IbvContext, c_int, *mut c_void, *mut IbvCompChannel, c_int) -> *mut IbvCq;
        ibv_destroy_cq: "ibv_destroy_cq" => fn(*mut IbvCq) -> c_int;
        ibv_get_cq_event: "ibv_get_cq_event" => fn(*mut IbvCompChannel, *mut *mut IbvCq, *mut *mut c_void) -> c_int;
        ibv_ack_cq_events: "ibv_ack_cq_events" => fn(*mut IbvCq, c_uint) -> ();
        ibv_create_qp: "ibv_create_qp" => fn(*mut IbvPd, *mut IbvQpInitAttr) -> *mut IbvQp;
        ibv_modify_qp: "ibv_modify_qp" => fn(*mut IbvQp, *mut IbvQpAttr, c_int) -> c_int;
        ibv_destroy_qp: "ibv_destroy_qp" => fn(*mut IbvQp) -> c_int;
        ibv_get_async_event: "ibv_get_async_event" => fn(*mut IbvContext, *mut IbvAsyncEvent) -> c_int;
        ibv_ack_async_event: "ibv_ack_async_event" => fn(*mut IbvAsyncEvent) -> ();
    }
}

/// The default soname, as NCCL loads it.
pub(crate) const DEFAULT_LIB: &str = "libibverbs.so.1";

impl IbvLib {
    /// The libibverbs at `path` (the caller passes `MIXCCL_IBVERBS_LIB`, else
    /// [`DEFAULT_LIB`]): opened on first use and never closed, since verbs objects
    /// and provider libraries must outlive every link. Results are kept per path,
    /// failures too, so a missing library costs one dlopen per process.
    pub(crate) fn get(path: &str) -> Result<&'static IbvLib, String> {
        type Cache = Vec<(String, Result<&'static IbvLib, String>)>;
        static LIBS: Mutex<Cache> = Mutex::new(Vec::new());
        let mut libs = LIBS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, r)) = libs.iter().find(|(p, _)| p == path) {
            return r.clone();
        }
        // Leaked on purpose: one small table per distinct path, alive as long as
        // the library it points into (forever).
        let r = Self::open(path).map(|lib| &*Box::leak(Box::new(lib)));
        libs.push((path.to_string(), r.clone()));
        r
    }

    fn open(path: &str) -> Result<IbvLib, String> {
        let src = Source {
            var: "MIXCCL_IBVERBS_LIB",
            path: Some(path.to_string()),
            sonames: &[DEFAULT_LIB],
            bind_now: true,
        };
        let lib = Library::open(&src).map_err(|e| format!("libibverbs {e}"))?;
        // SAFETY: every signature in IbvLib is verbs.h's (ABI IBVERBS_1.1).
        let api = unsafe { IbvLib::bind(&lib, "") }.map_err(|e| e.to_string())?;
        // Never closed: verbs objects and provider libraries must outlive every link.
        std::mem::forget(lib);
        Ok(api)
    }

    /// `ibv_poll_cq` (inline in verbs.h): up to `wc.len()` completions.
    ///
    /// # Safety
    /// `cq` must be a live CQ created by this library.
    pub(crate) unsafe fn poll_cq(&self, cq: *mut IbvCq, wc: &mut [IbvWc]) -> c_int {
        let f: PollCqFn = std::mem::transmute((*(*cq).context).ops[OP_POLL_CQ]);
        f(
            cq,
            wc.len().min(c_int::MAX as usize) as c_int,
            wc.as_mut_ptr(),
        )
    }

    /// `ibv_req_notify_cq` (inline in verbs.h).
    ///
    /// # Safety
    /// `cq` must be a live CQ created by this library.
    pub(crate) unsafe fn req_notify_cq(&self, cq: *mut IbvCq, solicited_only: bool) -> c_int {
        let f: ReqNotifyFn = std::mem::transmute((*(*cq).context).ops[OP_REQ_NOTIFY_CQ]);
        f(cq, c_int::from(solicited_only))
    }

    /// `ibv_post_send` (inline in verbs.h).
    ///
    /// # Safety
    /// `qp` must be a live QP of this library; `wr` and what it points to must be
    /// valid for the call.
    pub(crate) unsafe fn post_send(&self, qp: *mut IbvQp, wr: *mut IbvSendWr) -> c_int {
        let f: PostSendFn = std::mem::transmute((*(*qp).context).ops[OP_POST_SEND]);
        let mut bad = std::ptr::null_mut();
        f(qp, wr, &mut bad)
    }

    /// `ibv_post_recv` (inline in verbs.h).
    ///
    /// # Safety
    /// As [`IbvLib::post_send`].
    pub(crate) unsafe fn post_recv(&self, qp: *mut IbvQp, wr: *mut IbvRecvWr) -> c_int {
        let f: PostRecvFn = std::mem::transmute((*(*qp).context).ops[OP_POST_RECV]);
        let mut bad = std::ptr::null_mut();
        f(qp, wr, &mut bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The sizes and offsets verbs.h gives on x86-64 and aarch64 (rdma-core 50;
    /// unchanged since the ABI 1.1 structs were frozen). `tests/rdma_layout.rs`
    /// checks the same against the installed header when there is one.
    #[test]
    fn layouts_match_verbs_h() {
        assert_eq!(offset_of!(IbvContext, ops), 8);
        assert_eq!(offset_of!(IbvContext, cmd_fd), 264);
        assert_eq!(offset_of!(IbvContext, async_fd), 268);
        // offsetof(struct ibv_context_ops, ...): 32 pointers, 256 bytes.
        assert_eq!(size_of::<[*const c_void; 32]>(), 256);
        assert_eq!(OP_POLL_CQ * 8, 88);
        assert_eq!(OP_REQ_NOTIFY_CQ * 8, 96);
        assert_eq!(OP_POST_SEND * 8, 200);
        assert_eq!(OP_POST_RECV * 8, 208);
        assert_eq!(offset_of!(IbvCompChannel, fd), 8);
        assert_eq!(offset_of!(IbvQp, qp_num), 52);
        assert_eq!(offset_of!(IbvMr, lkey), 36);
        assert_eq!(offset_of!(IbvMr, rkey), 40);
        assert_eq!(offset_of!(IbvPortAttr, active_mtu), 8);
        assert_eq!(offset_of!(IbvPortAttr, lid), 34);
        assert_eq!(offset_of!(IbvPortAttr, link_layer), 46);
        assert!(size_of::<IbvPortAttr>() >= 56);
        assert_eq!(size_of::<IbvQpCap>(), 20);
        assert_eq!(offset_of!(IbvQpInitAttr, cap), 32);
        assert_eq!(offset_of!(IbvQpInitAttr, qp_type), 52);
        assert_eq!(size_of::<IbvQpInitAttr>(), 64);
        assert_eq!(size_of::<IbvGlobalRoute>(), 24);
        assert_eq!(offset_of!(IbvGlobalRoute, sgid_index), 20);
        assert_eq!(size_of::<IbvAhAttr>(), 32);
        assert_eq!(offset_of!(IbvAhAttr, dlid), 24);
        assert_eq!(offset_of!(IbvAhAttr, is_global), 29);
        assert_eq!(offset_of!(IbvAhAttr, port_num), 30);
        assert_eq!(size_of::<IbvQpAttr>(), 144);
        assert_eq!(offset_of!(IbvQpAttr, path_mtu), 8);
        assert_eq!(offset_of!(IbvQpAttr, rq_psn), 20);
        assert_eq!(offset_of!(IbvQpAttr, dest_qp_num), 28);
        assert_eq!(offset_of!(IbvQpAttr, cap), 36);
        assert_eq!(offset_of!(IbvQpAttr, ah_attr), 56);
        assert_eq!(offset_of!(IbvQpAttr, pkey_index), 120);
        assert_eq!(offset_of!(IbvQpAttr, max_rd_atomic), 126);
        assert_eq!(offset_of!(IbvQpAttr, port_num), 129);
        assert_eq!(offset_of!(IbvQpAttr, rnr_retry), 132);
        assert_eq!(offset_of!(IbvQpAttr, rate_limit), 136);
        assert_eq!(size_of::<IbvSge>(), 16);
        assert_eq!(size_of::<IbvSendWr>(), 128);
        assert_eq!(offset_of!(IbvSendWr, opcode), 28);
        assert_eq!(offset_of!(IbvSendWr, imm_data), 36);
        assert_eq!(offset_of!(IbvSendWr, rdma_remote_addr), 40);
        assert_eq!(offset_of!(IbvSendWr, rdma_rkey), 48);
        assert_eq!(size_of::<IbvRecvWr>(), 32);
        assert_eq!(size_of::<IbvWc>(), 48);
        assert_eq!(offset_of!(IbvWc, byte_len), 20);
        assert_eq!(offset_of!(IbvWc, imm_data), 24);
        assert_eq!(size_of::<IbvAsyncEvent>(), 16);
        assert_eq!(std::mem::align_of::<IbvQpAttr>(), 8);
    }

    /// Where rdma-core's header and a C compiler are installed, compiles a program
    /// printing the header's offsets and compares them with ours; says plainly
    /// when it cannot.
    #[test]
    fn layouts_match_the_installed_header() {
        let header = std::path::Path::new("/usr/include/infiniband/verbs.h");
        if !header.exists() {
            eprintln!(
                "SKIPPED header cross-check: {} is not installed",
                header.display()
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("mixccl-ibv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("l.c");
        let checks: &[(&str, usize)] = &[
            (
                "offsetof(struct ibv_context, ops)",
                offset_of!(IbvContext, ops),
            ),
            (
                "offsetof(struct ibv_context, async_fd)",
                offset_of!(IbvContext, async_fd),
            ),
            ("offsetof(struct ibv_context_ops, poll_cq)", OP_POLL_CQ * 8),
            (
                "offsetof(struct ibv_context_ops, req_notify_cq)",
                OP_REQ_NOTIFY_CQ * 8,
            ),
            (
                "offsetof(struct ibv_context_ops, post_send)",
                OP_POST_SEND * 8,
            ),
            (
                "offsetof(struct ibv_context_ops, post_recv)",
                OP_POST_RECV * 8,
            ),
            (
                "offsetof(struct ibv_comp_channel, fd)",
                offset_of!(IbvCompChannel, fd),
            ),
            ("offsetof(struct ibv_qp, qp_num)", offset_of!(IbvQp, qp_num)),
            ("offsetof(struct ibv_mr, lkey)", offset_of!(IbvMr, lkey)),
            ("offsetof(struct ibv_mr, rkey)", offset_of!(IbvMr, rkey)),
            (
                "offsetof(struct ibv_port_attr, lid)",
                offset_of!(IbvPortAttr, lid),
            ),
            (
                "offsetof(struct ibv_port_attr, link_layer)",
                offset_of!(IbvPortAttr, link_layer),
            ),
            (
                "sizeof(struct ibv_qp_init_attr)",
                size_of::<IbvQpInitAttr>(),
            ),
            ("sizeof(struct ibv_qp_attr)", size_of::<IbvQpAttr>()),
            (
                "offsetof(struct ibv_qp_attr, ah_attr)",
                offset_of!(IbvQpAttr, ah_attr),
            ),
            (
                "offsetof(struct ibv_qp_attr, port_num)",
                offset_of!(IbvQpAttr, port_num),
            ),
            (
                "offsetof(struct ibv_qp_attr, rnr_retry)",
                offset_of!(IbvQpAttr, rnr_retry),
            ),
            ("sizeof(struct ibv_ah_attr)", size_of::<IbvAhAttr>()),
            (
                "offsetof(struct ibv_ah_attr, is_global)",
                offset_of!(IbvAhAttr, is_global),
            ),
            ("sizeof(struct ibv_send_wr)", size_of::<IbvSendWr>()),
            (
                "offsetof(struct ibv_send_wr, imm_data)",
                offset_of!(IbvSendWr, imm_data),
            ),
            (
                "offsetof(struct ibv_send_wr, wr.rdma.rkey)",
                offset_of!(IbvSendWr, rdma_rkey),
            ),
            ("sizeof(struct ibv_recv_wr)", size_of::<IbvRecvWr>()),
            ("sizeof(struct ibv_wc)", size_of::<IbvWc>()),
            (
                "offsetof(struct ibv_wc, imm_data)",
                offset_of!(IbvWc, imm_data),
            ),
            ("sizeof(struct ibv_async_event)", size_of::<IbvAsyncEvent>()),
            ("IBV_WC_RETRY_EXC_ERR", 12),
            ("IBV_WC_RECV", IBV_WC_RECV as usize),
            ("IBV_QP_DEST_QPN", IBV_QP_DEST_QPN as usize),
            (
                "IBV_WR_RDMA_WRITE_WITH_IMM",
                IBV_WR_RDMA_WRITE_WITH_IMM as usize,
            ),
            ("IBV_EVENT_PORT_ERR", IBV_EVENT_PORT_ERR as usize),
        ];
        let mut c = String::from(
            "#include <infiniband/verbs.h>\n#include <stddef.h>\n#include <stdio.h>\nint main(void){\n",
        );
        for (expr, _) in checks {
            c.push_str(&format!("printf(\"%zu\\n\", (size_t)({expr}));\n"));
        }
        c.push_str("return 0;}\n");
        std::fs::write(&src, c).unwrap();
        let exe = dir.join("l");
        let built = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status();
        if !matches!(built, Ok(s) if s.success()) {
            eprintln!("SKIPPED header cross-check: no C compiler could build against verbs.h");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let out = std::process::Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let got: Vec<usize> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(got.len(), checks.len());
        for ((expr, ours), theirs) in checks.iter().zip(got) {
            assert_eq!(
                *ours, theirs,
                "{expr}: verbs.h says {theirs}, mixccl has {ours}"
            );
        }
    }

    #[test]
    fn status_names_follow_the_enum() {
        assert_eq!(wc_status_name(0), "IBV_WC_SUCCESS");
        assert_eq!(wc_status_name(5), "IBV_WC_WR_FLUSH_ERR");
        assert_eq!(wc_status_name(12), "IBV_WC_RETRY_EXC_ERR");
        assert_eq!(wc_status_name(99), "unknown ibv_wc_status");
    }
}
