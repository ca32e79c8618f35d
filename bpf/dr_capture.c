/* dr capture: the eBPF side. Compiled by BCC (dr/capture/probes.py).
 *
 * Tracepoints raw_syscalls:sys_enter/sys_exit record every syscall of the
 * traced tasks; sched:sched_process_fork/exec/exit and signal:signal_deliver
 * record process events. Records are the structs of the generated header
 * dr_schema.h (never retyped here), written into one BPF ring buffer.
 *
 * Per traced thread, `tasks` (task-local storage) holds the entry state (args, ts_enter, seq). The
 * syscall event is emitted at sys_exit (at sys_enter with NO_EXIT for exit and
 * exit_group). Payload copies follow the copy-rule table `rules`, loaded from
 * dr.schema.RULES and indexed nr * DR_MAX_RULES + i: a table rather than a
 * switch so the verifier sees one code path. A rule becomes a "job"; the
 * copier (a bounded loop, DR_STEPS steps per syscall phase; no tail calls)
 * gathers each job's bytes in fixed chunks of DR_CHUNK through per-CPU scratch
 * space and writes one dr_payload record per chunk (iovec entries are packed
 * into the same chunk). The common case, one buffer of at most one chunk at
 * exit, is written with its event as one dr_syscall_event_data record.
 *
 * Compile-time constants come in as -D flags (never string surgery):
 *   DR_SNAPLEN       bytes kept per buffer (longer: truncated, total keeps the length)
 *   DR_TID_FILTER    trace this tid only (0: trace the tgids in `tgids`)
 *   DR_FOLLOW        add children made by fork/vfork/clone to `tgids`
 *   DR_ORPHAN_EXITS  emit a sys_exit seen without its sys_enter (ENTRY_LOST)
 *   DR_RB_PAGES      ring buffer size in pages (a power of two)
 *   DR_NCPU          number of possible CPUs (scratch array size)
 *
 * Loss is never silent: every failed reservation or copy and every truncation
 * is counted per CPU by cause in `losses` (DR_LOSS_*), read by user space.
 */
#include <uapi/linux/ptrace.h>
#include "dr_schema.h"

#ifndef DR_SNAPLEN
#define DR_SNAPLEN DR_SNAPLEN_DEFAULT
#endif
#ifndef DR_TID_FILTER
#define DR_TID_FILTER 0
#endif
#ifndef DR_FOLLOW
#define DR_FOLLOW 1
#endif
#ifndef DR_ORPHAN_EXITS
#define DR_ORPHAN_EXITS 1
#endif
#ifndef DR_RB_PAGES
#define DR_RB_PAGES 16384
#endif
#ifndef DR_NCPU
#define DR_NCPU 64
#endif
#ifndef DR_PID_MAX
#define DR_PID_MAX 4194304
#endif

#define DR_MAX_JOBS 16      /* jobs per syscall phase (a power of two) */
#ifndef DR_RB_EVENT_TRIES
/* attempts per syscall event record. The failures these attempts were added
 * for (a few per million records with the ring nearly empty) came from the
 * consumer storing consumer_pos non-atomically (capture/ringbuf.py, fixed
 * 2026-12-06: 8M gettid calls, 0 failed attempts); a reservation now fails
 * when the ring is full, and another attempt costs nothing when the first
 * succeeds. 16 keeps sys_exit loadable at the copier's cap (capture/probes.py).
 * The loop is kept rolled (unrolled, the programs grow too large). Payload
 * records keep DR_RB_TRIES: they are written inside the copier loop, where the
 * verifier walks every attempt once per step. */
#define DR_RB_EVENT_TRIES 16
#endif
#ifndef DR_RB_TRIES
#define DR_RB_TRIES 4       /* attempts per ring-buffer record */
#endif
#ifndef DR_STEPS
#define DR_STEPS 192        /* copier steps per syscall phase (bounded loop) */
#endif
#define DR_RB_FLAGS 1       /* BPF_RB_NO_WAKEUP: user space polls */
#define DR_SOCKADDR_MAX 128 /* sizeof(struct sockaddr_storage) */
#define DR_CONTROL_MAX 4096
#define DR_CLONE_THREAD 0x00010000
#define DR_EINTR 4
#define DR_ERESTART_RESTARTBLOCK 516   /* include/linux/errno.h */
#define DR_PAGE 4096        /* x86_64 base page: a probe read faults page by page */
/* recvmmsg/sendmmsg's per-message bytes (J_MMSG). Not with --tid: the verifier
 * refuses that program's sys_exit with the expansion (measured on 6.18: its
 * 1M-instruction budget), so a --tid capture keeps only the mmsghdr array. */
#define DR_MMSG_DATA (!DR_TID_FILTER)

/* user-space visible counters (stats map) */
enum { DR_ST_EVENTS = 0, DR_ST_PAYLOAD_BYTES = 1, DR_ST_PAYLOADS = 2, DR_ST_PROC = 3,
       DR_ST_RETRIED = 4 };

enum { J_PLAIN = 0, J_IOV = 1, J_STR = 2, J_ARGV = 3, J_MSG = 4, J_MMSG = 5 };

struct dr_task {
	u64 seq;
	u64 ts_enter;
	u64 args[6];
	s64 nr;
	u32 tgid;
	u16 in_call;
	u16 flags;      /* event flags gathered at entry */
	u32 req;        /* reqbufs value of the request (Rule REQ), looked up at entry */
	u32 exec_tid;   /* a successful exec: caller's tid ^ tid now (de_thread may give it the tgid) */
};

struct dr_job {
	u64 addr;       /* user address: buffer, iovec array, msghdr, argv */
	u64 len;        /* bytes to copy at most (<= DR_SNAPLEN for buffers) */
	u64 total;      /* true length */
	u32 cnt;        /* iovec entries */
	u16 slot;       /* arg | Sub << 4 */
	u16 type;       /* J_* */
	u32 upto;       /* len is what the kernel may touch at most (see run_jobs), not what it did */
	u32 cur;        /* J_MMSG: the next message to expand */
};

struct dr_work {
	struct dr_syscall_event ev;
	u32 njobs, job;   /* job list and cursor */
	u32 idx;          /* iovec / argv element cursor */
	u32 pos;          /* bytes gathered in data */
	u64 seg_addr, seg_left;
	u64 left;         /* bytes still to copy for the current job */
	u64 off;          /* offset of data[0] in the current job's buffer */
	u32 started, req;   /* req: the request's buffer (reqbufs value) of this call */
	u32 bypage;       /* the current job is read one page at a time (a piece faulted) */
	u32 upto;         /* build_jobs: the jobs it adds now are J_PLAIN upper bounds */
	struct dr_job jobs[DR_MAX_JOBS];
	/* struct dr_payload header, then 2 * DR_CHUNK bytes of data: a chunk may
	 * start anywhere below DR_CHUNK, and the verifier bounds pos + len. */
	u8 buf[sizeof(struct dr_syscall_event_data) + 2 * DR_CHUNK];
};

struct dr_inflight {
	/* end first: user space copies the value in address order and must read
	 * end before start for its answer to err on the side of "in flight" */
	u64 end;     /* programs that finished (every record committed) */
	u64 start;   /* programs that began writing to the ring buffer */
};

struct dr_msghdr {   /* struct user_msghdr, include/linux/socket.h (x86_64) */
	u64 name;
	u32 namelen;
	u32 pad0;
	u64 iov;
	u64 iovlen;
	u64 control;
	u64 controllen;
	u32 flags;
	u32 pad1;
};

struct dr_mmsghdr {  /* struct mmsghdr, include/linux/socket.h: msghdr, then msg_len */
	struct dr_msghdr hdr;
	u32 len;
};

/* entry state per thread: task-local storage, freed with the task */
BPF_TASK_STORAGE(tasks, struct dr_task);
BPF_HASH(tgids, u32, u8, 8192);
BPF_ARRAY(tgbits, u64, DR_PID_MAX / 64);     /* bit per tgid: maybe traced */
BPF_ARRAY(rules, struct dr_rule, DR_NR_MAX * DR_MAX_RULES);
BPF_ARRAY(nrinfo, u8, DR_NR_MAX);            /* bit 0: entry rules, bit 1: exit rules, bit 2: exec */
/* (nr << 32 | request) -> bytes | DR_REQ_OUT | DR_REQ_ENTRY: buffers sized by
 * a request argument (ioctl, fcntl, prctl; Rule REQ) */
BPF_HASH(reqbufs, u64, u32, 512);
/* the same key -> header | count offset << 16 | element << 32 of a DR_REQ_COUNTED request */
BPF_HASH(reqcount, u64, u64, 16);
/* setsockopt (level << 32 | optname) -> count offset | pointer offset << 16 | element << 32:
 * the option's structure points at an array the kernel fills (iptables' counters) */
BPF_HASH(sockptr, u64, u64, 16);
/* bpf(2) cmd -> up to 3 buffers its attr points at (flagsets.BPF_POINTED), each
 * pointer offset | size offset << 8 | element << 16 | mode << 32 | out << 40 */
struct dr_bpfptr {
	u64 d[3];
};
BPF_HASH(bpfptr, u32, struct dr_bpfptr, 64);
/* tgid << 32 | map fd -> key_size | value_size << 32, from its BPF_MAP_CREATE */
BPF_HASH(bpfmaps, u64, u64, 4096);
enum { DR_BP_FIELD = 1, DR_BP_KEY = 2, DR_BP_VALUE = 3, DR_BP_STR = 4 };
#define DR_REQ_OUT (1U << 31)     /* written by the kernel: read at exit when the call succeeded */
#define DR_REQ_ENTRY (1U << 30)   /* value-result: also read at entry (Sub ENTRY) */
#define DR_REQ_RET (1U << 26)     /* out, as many bytes as the call returns (syslog READ_ALL) */
#define DR_REQ_RETLEN (1U << 29)  /* min(return value, the argument after the buffer) bytes (keyctl) */
#define DR_REQ_COUNTED (1U << 27) /* a header and an array: reqcount says how long (FS_IOC_FIEMAP) */
#define DR_REQ_IOV (1U << 25)     /* one struct iovec: the iov_len bytes the kernel wrote at iov_base (PTRACE_GETREGSET) */
#define DR_REQ_SUB (1U << 28)     /* the next argument picks the buffer: look up again with it + 1
				   * in key bits 48-63; that value's bits 16-18 are its argument + 1 */
BPF_PERCPU_ARRAY(losses, u64, DR_LOSS_NCAUSES);
BPF_PERCPU_ARRAY(inflight, struct dr_inflight, 1);
BPF_PERCPU_ARRAY(counts, u64, DR_NR_MAX);    /* syscall events written, by nr */
BPF_PERCPU_ARRAY(stats, u64, 5);             /* DR_ST_* */
BPF_ARRAY(work, struct dr_work, DR_NCPU);
BPF_RINGBUF_OUTPUT(rb, DR_RB_PAGES);

static __always_inline void count_loss(u32 cause)
{
	u64 *v = losses.lookup(&cause);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* User space may consume the ring up to producer_pos without walking it when
 * no program is between its first reservation and its last commit. */
static __always_inline void ring_begin(void)
{
	u32 z = 0;
	struct dr_inflight *f = inflight.lookup(&z);
	if (f)
		__sync_fetch_and_add(&f->start, 1);
}

static __always_inline void ring_end(void)
{
	u32 z = 0;
	struct dr_inflight *f = inflight.lookup(&z);
	if (f)
		__sync_fetch_and_add(&f->end, 1);
}

/* A cheap first test for every syscall on the machine: one bit per tgid in
 * an array (inlined lookup, no hash). Only tasks whose bit is set pay for the
 * hash lookups. */
static __always_inline int maybe_traced(u32 tgid, u32 tid)
{
#if DR_TID_FILTER
	return tid == DR_TID_FILTER;
#else
	u32 idx = tgid >> 6;
	u64 *w = tgbits.lookup(&idx);
	return w && (*w & (1ULL << (tgid & 63)));
#endif
}

static __always_inline int traced(u32 tgid, u32 tid)
{
#if DR_TID_FILTER
	return tid == DR_TID_FILTER;
#else
	return maybe_traced(tgid, tid) && tgids.lookup(&tgid) != 0;
#endif
}

static __always_inline void set_traced(u32 tgid, int on)
{
	u8 one = 1;
	u32 idx = tgid >> 6;
	u64 *w = tgbits.lookup(&idx);
	if (on) {
		tgids.update(&tgid, &one);
		if (w)
			__sync_fetch_and_or(w, 1ULL << (tgid & 63));
	} else {
		tgids.delete(&tgid);
		if (w)
			__sync_fetch_and_and(w, ~(1ULL << (tgid & 63)));
	}
}

static __always_inline struct dr_work *get_work(void)
{
	u32 cpu = bpf_get_smp_processor_id();
	return work.lookup(&cpu);
}

static __always_inline void bump(u32 idx, u64 n)
{
	u64 *v = stats.lookup(&idx);
	if (v)
		*v += n;
}

/* One record into the ring: try up to `tries` times (DR_RB_EVENT_TRIES,
 * DR_RB_TRIES), so a consumer that frees room meanwhile saves the record; what
 * still fails is counted. */
static __always_inline int rb_out(void *p, u64 size, const int tries)
{
#pragma clang loop unroll(disable)
	for (int i = 0; i < tries; i++) {
		if (rb.ringbuf_output(p, size, DR_RB_FLAGS) == 0) {
			if (i)
				bump(DR_ST_RETRIED, 1);
			return 0;
		}
	}
	return -1;
}

static __always_inline void event_written(struct dr_work *w)
{
	bump(DR_ST_EVENTS, 1);
	u32 nr = w->ev.nr;
	u64 *c = counts.lookup(&nr);
	if (c)
		*c += 1;
}

static __always_inline void emit_event(struct dr_work *w)
{
	if (rb_out(&w->ev, sizeof(w->ev), DR_RB_EVENT_TRIES) < 0) {
		count_loss(DR_LOSS_RINGBUF_EVENT);
		return;
	}
	event_written(w);
}

/* The event and its one payload as ONE record (struct dr_syscall_event_data):
 * the n <= DR_CHUNK data bytes were read to w->buf + the header's size. */
static __always_inline void emit_event_data(struct dr_work *w, struct dr_job *j, u64 n)
{
	struct dr_syscall_event_data *e = (void *)w->buf;
	__builtin_memcpy(e, &w->ev, sizeof(w->ev));
	e->kind = DR_REC_SYSCALL_EVENT_DATA;
	e->slot = j->slot;
	e->pad = 0;
	e->len = n;
	e->total = j->total;
	n &= (2 * DR_CHUNK - 1);
	if (rb_out(e, sizeof(*e) + n, DR_RB_EVENT_TRIES) < 0) {
		count_loss(DR_LOSS_RINGBUF_EVENT);
		return;
	}
	event_written(w);
	bump(DR_ST_PAYLOAD_BYTES, n);
	bump(DR_ST_PAYLOADS, 1);
}

static __always_inline void emit_proc(u16 what, u32 tgid, u32 tid, s64 a0, s64 a1)
{
	struct dr_proc_event *p = 0;
	for (int i = 0; i < DR_RB_TRIES && !p; i++)
		p = rb.ringbuf_reserve(sizeof(struct dr_proc_event));
	if (!p) {
		count_loss(DR_LOSS_RINGBUF_PROC);
		return;
	}
	p->kind = DR_REC_PROC_EVENT;
	p->what = what;
	p->cpu = bpf_get_smp_processor_id();
	p->tgid = tgid;
	p->tid = tid;
	p->ts = bpf_ktime_get_ns();
	p->arg0 = a0;
	p->arg1 = a1;
	rb.ringbuf_submit(p, DR_RB_FLAGS);
	bump(DR_ST_PROC, 1);
}

static __always_inline void fill_event(struct dr_work *w, struct dr_task *t, u32 tid)
{
	w->ev.kind = DR_REC_SYSCALL_EVENT;
	w->ev.flags = t->flags;
	w->ev.cpu = bpf_get_smp_processor_id();
	w->ev.tgid = t->tgid;
	w->ev.tid = tid;
	w->ev.seq = t->seq;
	w->ev.nr = t->nr;
#pragma unroll
	for (int i = 0; i < 6; i++)
		w->ev.args[i] = t->args[i];
	w->ev.ret = 0;
	w->ev.ts_enter = t->ts_enter;
	w->ev.ts_exit = 0;
}

static __always_inline void add_job(struct dr_work *w, u16 slot, u16 type, u64 addr,
				    u64 total, u32 cnt)
{
	if (!addr)
		return;
	if ((type == J_PLAIN || type == J_IOV) && total == 0)
		return;
	if (type == J_MMSG)
		total = 1;   /* not a byte count: no truncation below */
	u32 n = w->njobs;
	if (n >= DR_MAX_JOBS) {
		count_loss(DR_LOSS_COPY_FAULT);
		w->ev.flags |= DR_EVF_COPY_FAILED;
		return;
	}
	u64 len = total;
	if ((type == J_PLAIN || type == J_IOV) && total > DR_SNAPLEN) {
		len = DR_SNAPLEN;
		w->ev.flags |= DR_EVF_TRUNCATED;
		count_loss(DR_LOSS_TRUNCATED);
	}
	struct dr_job *j = &w->jobs[n & (DR_MAX_JOBS - 1)];
	j->addr = addr;
	j->len = len;
	j->total = total;
	j->cnt = cnt;
	j->slot = slot;
	j->type = type;
	j->upto = type == J_PLAIN && w->upto;
	j->cur = 0;
	w->njobs = n + 1;
}

static __always_inline void copy_fault(struct dr_work *w)
{
	count_loss(DR_LOSS_COPY_FAULT);
	w->ev.flags |= DR_EVF_COPY_FAILED;
	w->seg_left = 0;
	w->left = 0;
}

/* bpf(2) at exit of a successful call: the buffers its attr (a[1]) points at,
 * as flagsets.BPF_POINTED describes them for the command (a[0]), on the attr's
 * slot, Sub POINTED, entry index << 8. A map's key and value sizes come from
 * its BPF_MAP_CREATE, remembered here by (tgid, fd); a map this process did not
 * create has none, and its buffers are not recorded (replay refuses them). */
static __always_inline void bpf_pointed(struct dr_work *w, u64 *a, s64 ret)
{
	u32 cmd = a[0];
	u64 attr = a[1];
	u32 asz = a[2];
	if (cmd == 0 && asz >= 12) {   /* BPF_MAP_CREATE: map_type, key_size, value_size */
		u32 kv[2] = {};
		if (!bpf_probe_read_user(kv, sizeof(kv), (void *)(attr + 4))) {
			u64 key = (u64)w->ev.tgid << 32 | (u32)ret;
			u64 v = kv[0] | (u64)kv[1] << 32;
			bpfmaps.update(&key, &v);
		}
		return;
	}
	struct dr_bpfptr *p = bpfptr.lookup(&cmd);
	if (!p)
		return;
	u32 mapfd = 0;
	bpf_probe_read_user(&mapfd, sizeof(mapfd), (void *)attr);
	u64 mkey = (u64)w->ev.tgid << 32 | mapfd;
	u64 *sizes = bpfmaps.lookup(&mkey);
	u64 kv = sizes ? *sizes : 0;
#pragma unroll
	for (int k = 0; k < 3; k++) {
		u64 d = p->d[k];
		u32 mode = (d >> 32) & 0xff;
		u32 off = d & 0xff;
		if (!mode || off + 8 > asz)
			continue;
		u64 ptr = 0, len = 0;
		bpf_probe_read_user(&ptr, sizeof(ptr), (void *)(attr + off));
		if (mode == DR_BP_FIELD) {
			u32 f = 0;
			bpf_probe_read_user(&f, sizeof(f), (void *)(attr + ((d >> 8) & 0xff)));
			len = (u64)f * ((d >> 16) & 0xffff);
		} else if (mode == DR_BP_KEY) {
			len = kv & 0xffffffff;
		} else if (mode == DR_BP_VALUE) {
			len = kv >> 32;
		}
		if (len > DR_BPF_POINTED_MAX)
			len = DR_BPF_POINTED_MAX;
		/* an out-buffer's size is the most the kernel may write (a verifier
		 * log in untouched .bss pages): it ends at a page still unreadable */
		w->upto = (d >> 40) & 1;
		add_job(w, 1 | (DR_SUB_POINTED << 4) | (k << 8), mode == DR_BP_STR ? J_STR : J_PLAIN, ptr, len, 0);
	}
	w->upto = 0;
}

/* Turn the copy rules of syscall `nr` into jobs for one phase. */
static __always_inline void build_jobs(struct dr_work *w, s64 nr, u64 *a, s64 ret, int at_exit)
{
	w->njobs = 0;
	w->job = 0;
	w->started = 0;
	w->upto = 0;
	if (nr < 0 || nr >= DR_NR_MAX)
		return;
	/* setsockopt whose structure points at an array the kernel fills
	 * (iptables' counters): that array, on the optval slot, Sub POINTED.
	 * Before the rules' loop: after it, the verifier walks it once per path. */
	if (at_exit && nr == DR_NR_setsockopt && ret == 0) {
		u64 key = ((u64)(u32)a[1] << 32) | (u32)a[2];
		u64 *p = sockptr.lookup(&key);
		if (p) {
			u64 v = *p, ptr = 0;
			u32 cnt = 0;
			bpf_probe_read_user(&cnt, sizeof(cnt), (void *)(a[3] + (v & 0xffff)));
			bpf_probe_read_user(&ptr, sizeof(ptr), (void *)(a[3] + ((v >> 16) & 0xffff)));
			if (ptr && cnt)
				add_job(w, 3 | (DR_SUB_POINTED << 4), J_PLAIN, ptr,
					(u64)cnt * ((v >> 32) & 0xffff), 0);
		}
	}
	if (at_exit && nr == DR_NR_bpf && ret >= 0)
		bpf_pointed(w, a, ret);
	for (int i = 0; i < DR_MAX_RULES; i++) {
		u32 key = nr * DR_MAX_RULES + i;
		struct dr_rule *r = rules.lookup(&key);
		if (!r || !r->valid)
			break;
		u32 ai = r->arg;
		if (ai > 5)
			continue;
		u64 addr = a[ai];
		u32 pi = r->param;
		u64 pv = 0;
		if (pi <= 5)
			pv = a[pi];
		u16 slot = ai;
		u8 kind = r->kind, rule = r->rule;
		u64 len = 0;
		u64 pos_ret = ret > 0 ? (u64)ret : 0;

		/* Strings are copied at exit, when the kernel has faulted their pages
		 * in (a BPF probe cannot). execve/execveat never come here: see
		 * build_exec_jobs. */
		if (!at_exit) {
			if (r->valid & 2)   /* an in-parameter the kernel may overwrite */
				add_job(w, slot, J_PLAIN, addr, r->size, 0);
			else if (kind == DR_K_INOUT && rule == DR_R_CONST)
				add_job(w, slot | (DR_SUB_ENTRY << 4), J_PLAIN, addr, r->size, 0);
			else if (kind == DR_K_INOUT && rule == DR_R_CNT)
				add_job(w, slot | (DR_SUB_ENTRY << 4), J_PLAIN, addr, pv * r->elem, 0);
			else if (kind == DR_K_INOUT && rule == DR_R_BITS)
				add_job(w, slot | (DR_SUB_ENTRY << 4), J_PLAIN, addr, ((pv & 0xffffffff) + 63) / 64 * 8, 0);
			else if (rule == DR_R_REQ) {
				u64 key = ((u64)nr << 32) | (u32)pv;
				u32 *d = reqbufs.lookup(&key);
				if (d && (*d & DR_REQ_SUB)) {   /* prctl(PR_SET_MM, sub, buf) */
					u64 sub = pi < 5 ? a[pi + 1] : 0;
					key |= ((sub & 0xffff) + 1) << 48;
					d = reqbufs.lookup(&key);
				}
				w->req = d ? *d : 0;
				/* another ioctl request with _IOC_READ: the kernel writes as
				 * many bytes as its size bits say (asm-generic/ioctl.h) */
				if (!d && nr == DR_NR_ioctl && (((u32)pv >> 30) & 2))
					w->req = DR_REQ_OUT | (((u32)pv >> 16) & 0x3fff);
				if (d && (*d & DR_REQ_ENTRY))
					add_job(w, slot | (DR_SUB_ENTRY << 4), J_PLAIN, addr, *d & 0xffff, 0);
			}
			continue;
		}
		if (kind == DR_K_PATH || kind == DR_K_STR) {
			add_job(w, slot, J_STR, addr, 0, 0);
			continue;
		}
		if (kind == DR_K_ARGV || (r->valid & 2))   /* r->valid & 2: read at entry */
			continue;
		/* A size from the return value is what the kernel moved; any other
		 * (a structure's size, a count or request argument) is the most it
		 * may touch: capget writes one cap_user_data for version 1, a name
		 * is read to its NUL. */
		w->upto = rule != DR_R_RET && rule != DR_R_MIN_RET_ARG;
		if (rule == DR_R_REQ) {
			/* ioctl, fcntl, prctl: the size came with the request, looked
			 * up at entry (one map lookup fewer for the verifier here) */
			u32 d = w->req;
			if (!d || ((d & DR_REQ_OUT) && ret < 0))
				continue;
			if (d & DR_REQ_RET) {
				if (ret > 0)
					add_job(w, slot, J_PLAIN, addr, pos_ret, 0);
				continue;
			}
			len = d & 0xffff;
			u32 bi = (d >> 16) & 7;
			if (bi >= 1 && bi <= 6) {   /* a sub-request's buffer argument */
				addr = a[bi - 1];
				slot = bi - 1;
			}
			if (d & DR_REQ_COUNTED) {
				/* the count the kernel wrote into the header */
				u64 key = ((u64)nr << 32) | (u32)pv;
				u64 *c = reqcount.lookup(&key);
				u32 cnt = 0;
				if (c)
					bpf_probe_read_user(&cnt, sizeof(cnt), (void *)(addr + ((*c >> 16) & 0xffff)));
				if (c)
					len = (*c & 0xffff) + (u64)cnt * ((*c >> 32) & 0xffff);
			}
			if (d & DR_REQ_IOV) {   /* the iovec's iov_len is what the kernel wrote */
				u64 iov[2] = {};
				bpf_probe_read_user(iov, sizeof(iov), (void *)addr);
				addr = iov[0];
				len = iov[1] < len ? iov[1] : len;
			}
			if (d & DR_REQ_RETLEN) {
				/* the kernel copies at most the buffer's length and
				 * returns the whole size (keyctl(2) KEYCTL_READ) */
				u64 cap = ai < 5 ? a[ai + 1] : 0;
				len = pos_ret < cap ? pos_ret : cap;
			}
			add_job(w, slot, J_PLAIN, addr, len, 0);
			continue;
		}
		if (rule == DR_R_NONE)
			continue;
		if (rule == DR_R_CONST) {
			len = r->size;
		} else if (rule == DR_R_ARG || rule == DR_R_CNT) {
			len = pv;
			if (rule == DR_R_CNT && r->elem)   /* an array in: element count (process_vm_readv's rvec) */
				len *= r->elem;
		} else if (rule == DR_R_RET) {
			len = pos_ret;
			if (r->elem)
				len *= r->elem;
		} else if (rule == DR_R_DEREF) {
			u32 v = 0;
			if (pv)
				bpf_probe_read_user(&v, sizeof(v), (void *)pv);
			len = v;
		} else if (rule == DR_R_MIN_RET_ARG) {
			len = pos_ret < pv ? pos_ret : pv;
		} else if (rule == DR_R_BITS) {
			len = ((pv & 0xffffffff) + 63) / 64 * 8;
		}
		/* Out-buffers are valid when the call succeeded; timespec-like
		 * out-structures also when a signal interrupted it (nanosleep's rmtp,
		 * written before the kernel returns -ERESTART_RESTARTBLOCK). */
		int ok_out = ret >= 0 || (rule == DR_R_CONST && (ret == -DR_EINTR || ret == -DR_ERESTART_RESTARTBLOCK));
		if (kind == DR_K_BUF_OUT || kind == DR_K_SOCKADDR_OUT) {
			if (!ok_out)
				continue;
			if (kind == DR_K_SOCKADDR_OUT && len > DR_SOCKADDR_MAX)
				len = DR_SOCKADDR_MAX;
			add_job(w, slot, J_PLAIN, addr, len, 0);
		} else if (kind == DR_K_BUF_IN || kind == DR_K_SOCKADDR_IN) {
			if (rule == DR_R_RET && ret <= 0)
				continue;
			if (kind == DR_K_SOCKADDR_IN && len > DR_SOCKADDR_MAX)
				len = DR_SOCKADDR_MAX;
			add_job(w, slot, J_PLAIN, addr, len, 0);
		} else if (kind == DR_K_INOUT) {
			if (!ok_out)
				continue;
			if (rule == DR_R_CNT)
				len = pv * r->elem;
			add_job(w, slot, J_PLAIN, addr, len, 0);
		} else if (kind == DR_K_IOV_IN || kind == DR_K_IOV_OUT) {
			if (ret <= 0)
				continue;
			add_job(w, slot, J_IOV, addr, pos_ret, pv > DR_IOV_MAX_FOLLOW ? DR_IOV_MAX_FOLLOW : pv);
		} else if (kind == DR_K_MSG_IN || kind == DR_K_MSG_OUT) {
			if (ret < 0)
				continue;
			add_job(w, slot, J_MSG, addr, pos_ret, 0);
		} else if (kind == DR_K_MMSG_IN || kind == DR_K_MMSG_OUT) {
			if (ret <= 0)
				continue;
			add_job(w, slot | (DR_SUB_HEADER << 4), J_PLAIN, addr, pos_ret * r->elem, 0);
			/* each message's bytes (run_jobs expands one message per
			 * step into its own job, so at most DR_MAX_JOBS - 2 fit: the
			 * rest are counted, not silently missing) */
			if (DR_MMSG_DATA) {
				add_job(w, slot, J_MMSG, addr, 0, pos_ret > DR_MAX_JOBS ? DR_MAX_JOBS : pos_ret);
				if (pos_ret > DR_MAX_JOBS)
					copy_fault(w);
			}
		}
	}
	w->upto = 0;   /* jobs the copier adds (a msghdr's parts) are exact */
}

/* A successful execve/execveat: path, argv and envp are read from the new
 * image's initial stack, which the kernel has just written (so no page can
 * fault), at sched_process_exec (a program of its own: its own verifier
 * budget), before the syscall returns. At the user sp lie argc, argv[], NULL,
 * envp[], NULL, then the auxv (System V x86-64 ABI 3.4.1). The kernel copies
 * the strings into one contiguous area (fs/exec.c: argv strings, envp
 * strings, then the filename AT_EXECFN points at), so argv is the bytes
 * [argv[0], envp[0]) and envp [envp[0], AT_EXECFN): two plain copies, no
 * per-string reads, no count limit. The path is the AT_EXECFN string, the
 * filename the caller passed (execveat of an fd: "/dev/fd/N[/name]"). For a
 * #! script the kernel has rewritten argv (interpreter, its argument, script
 * path, argv[1..]): that is what the new image received, and what is recorded.
 * A failed exec: see build_jobs. */
#define DR_AT_EXECFN 31
#define DR_ENV_SCAN 512      /* 8 envp entries per step: at most 4096 entries */
#define DR_AUXV_SCAN 64
#define DR_EXEC_STEPS 40     /* copier steps: 3 jobs of up to snaplen (16 chunks) */
static __always_inline void build_exec_jobs(struct dr_work *w, s64 nr, u64 sp)
{
	u16 ps = nr == DR_NR_execveat ? 1 : 0;   /* slot of the path; argv, envp follow */
	w->njobs = 0;
	w->job = 0;
	w->started = 0;
	w->upto = 0;
	w->seg_addr = 0;   /* the scan's results go through the map value, so */
	w->seg_left = 0;   /* the verifier joins the loop's exits into one state */
	u64 argc = 0, argv0 = 0;
	if (bpf_probe_read_user(&argc, sizeof(argc), (void *)sp) || argc > (1 << 20)) {
		copy_fault(w);
		return;
	}
	if (argc)
		bpf_probe_read_user(&argv0, sizeof(argv0), (void *)(sp + 8));
	u64 envp = sp + 8 * (argc + 2);
#pragma clang loop unroll(disable)
	for (int i = 0; i < DR_ENV_SCAN; i++) {
		u64 p[8] = {};
		if (bpf_probe_read_user(p, sizeof(p), (void *)(envp + 64 * (u64)i)))
			break;
#pragma unroll
		for (int k = 0; k < 8; k++) {
			if (p[k] == 0) {
				w->seg_addr = envp + 64 * (u64)i + 8 * k;   /* the NULL after envp[] */
				goto found;
			}
		}
	}
	copy_fault(w);
	return;
found:;
	u64 envnull = w->seg_addr;
	u64 envp0 = 0;
	if (envnull > envp)
		bpf_probe_read_user(&envp0, sizeof(envp0), (void *)envp);
#pragma clang loop unroll(disable)
	for (int i = 0; i < DR_AUXV_SCAN; i++) {
		u64 e[2] = {};
		if (bpf_probe_read_user(e, sizeof(e), (void *)(envnull + 8 + 16 * (u64)i)) || e[0] == 0)
			break;
		if (e[0] == DR_AT_EXECFN) {
			w->seg_left = e[1];
			break;
		}
	}
	u64 execfn = w->seg_left;
	w->seg_addr = 0;
	w->seg_left = 0;
	if (!execfn) {
		copy_fault(w);
		return;
	}
	add_job(w, ps, J_STR, execfn, 0, 0);
	u64 argv_end = envp0 ? envp0 : execfn;
	if (argv0 && argv_end > argv0)
		add_job(w, ps + 1, J_PLAIN, argv0, argv_end - argv0, 0);
	if (envp0 && execfn > envp0)
		add_job(w, ps + 2, J_PLAIN, envp0, execfn - envp0, 0);
}

static __always_inline void flush(struct dr_work *w, struct dr_job *j)
{
	u32 n = w->pos;
	if (n == 0)
		return;
	struct dr_payload *p = (void *)w->buf;
	p->kind = DR_REC_PAYLOAD;
	p->slot = j->slot;
	p->tid = w->ev.tid;
	p->seq = w->ev.seq;
	p->offset = w->off;
	p->len = n;
	p->total = j->total;
	n &= (2 * DR_CHUNK - 1);
	if (rb_out(p, sizeof(struct dr_payload) + n, DR_RB_TRIES) < 0) {
		count_loss(DR_LOSS_RINGBUF_PAYLOAD);
		w->ev.flags |= DR_EVF_PAYLOAD_LOST;
	} else {
		bump(DR_ST_PAYLOAD_BYTES, n);
		bump(DR_ST_PAYLOADS, 1);
	}
	w->off += w->pos;
	w->pos = 0;
}

/* The copier: runs the jobs in w, at most DR_STEPS steps (a bounded loop
 * the verifier walks once per step; no tail call, so no prog_array that
 * could outlive dr). Each step either starts a job, fetches the next
 * iovec/argv element, or copies one piece (<= DR_CHUNK) of the current
 * segment. Jobs left when the steps run out are counted as lost. */
static __always_inline void run_jobs(struct dr_work *w, const int at_exit, const int steps)
{
	u8 *data = w->buf + sizeof(struct dr_payload);

#pragma clang loop unroll(disable)
	for (int s = 0; s < steps; s++) {
		u32 ji = w->job;
		if (ji >= w->njobs || ji >= DR_MAX_JOBS)
			return;
		struct dr_job *j = &w->jobs[ji & (DR_MAX_JOBS - 1)];
		if (DR_MMSG_DATA && at_exit && j->type == J_MMSG) {
			/* recvmmsg/sendmmsg: message j->cur becomes a J_IOV job of its
			 * msg_len bytes on its own slot (Sub MESSAGE, index << 8), one
			 * message per step (the mmsghdr array itself is another job) */
			u32 m = j->cur;
			if (m < j->cnt && m < DR_MAX_JOBS) {
				struct dr_mmsghdr h = {};
				if (bpf_probe_read_user(&h, sizeof(h), (void *)(j->addr + sizeof(struct dr_mmsghdr) * (u64)m))) {
					copy_fault(w);
					j->cur = j->cnt;
				} else {
					add_job(w, (j->slot & 0xf) | (DR_SUB_MESSAGE << 4) | (m << 8), J_IOV,
						h.hdr.iov, h.len,
						h.hdr.iovlen > DR_IOV_MAX_FOLLOW ? DR_IOV_MAX_FOLLOW : h.hdr.iovlen);
					j->cur = m + 1;
				}
				continue;
			}
			w->job = ji + 1;
			continue;
		}
		if (!w->started) {
			w->started = 1;
			w->idx = 0;
			w->pos = 0;
			w->off = 0;
			w->seg_left = 0;
			w->seg_addr = 0;
			w->bypage = 0;
			w->left = j->len;
			if (j->type == J_PLAIN) {
				w->seg_addr = j->addr;
				w->seg_left = j->len;
			} else if (j->type == J_STR) {
				long n = bpf_probe_read_user_str(data, DR_STR_MAX, (void *)j->addr);
				if (n < 0 && at_exit && w->ev.ret < 0) {
					/* A failed call whose string is not in memory now: the
					 * kernel, which faults pages in, did not read it (it
					 * failed first: quotactl's EINVAL for a bad command) or
					 * could not (EFAULT). Nothing was read, nothing lost. */
				} else if (n < 0) {
					copy_fault(w);
				} else {
					n = n > 0 ? n - 1 : 0;   /* the NUL is not part of the string */
					w->pos = n & (DR_STR_MAX - 1);
					j->total = w->pos;
					if (w->pos == 0) {
						/* an empty string still says it was empty */
						struct dr_payload *p = (void *)w->buf;
						p->kind = DR_REC_PAYLOAD;
						p->slot = j->slot;
						p->tid = w->ev.tid;
						p->seq = w->ev.seq;
						p->offset = 0;
						p->len = 0;
						p->total = 0;
						if (rb_out(p, sizeof(struct dr_payload), DR_RB_TRIES) < 0)
							count_loss(DR_LOSS_RINGBUF_PAYLOAD);
					}
					flush(w, j);
				}
				w->job = ji + 1;
				w->started = 0;
				continue;
			} else if (at_exit && j->type == J_MSG) {
				/* recvmsg/sendmsg: the msghdr becomes jobs for its header,
				 * name, iovec data (ret bytes) and control data */
				struct dr_msghdr m = {};
				if (bpf_probe_read_user(&m, sizeof(m), (void *)j->addr)) {
					copy_fault(w);
				} else {
					u16 a = j->slot & 0xf;
					u64 ret = j->total;
					add_job(w, a | (DR_SUB_HEADER << 4), J_PLAIN, j->addr, sizeof(m), 0);
					add_job(w, a | (DR_SUB_NAME << 4), J_PLAIN, m.name,
						m.namelen > DR_SOCKADDR_MAX ? DR_SOCKADDR_MAX : m.namelen, 0);
					add_job(w, a, J_IOV, m.iov, ret,
						m.iovlen > DR_IOV_MAX_FOLLOW ? DR_IOV_MAX_FOLLOW : m.iovlen);
					add_job(w, a | (DR_SUB_CONTROL << 4), J_PLAIN, m.control,
						m.controllen > DR_CONTROL_MAX ? DR_CONTROL_MAX : m.controllen, 0);
				}
				w->job = ji + 1;
				w->started = 0;
				continue;
			}
		}
		if (w->seg_left == 0) {
			if (at_exit && j->type == J_IOV && w->idx < j->cnt && w->idx < DR_IOV_MAX_FOLLOW && w->left > 0) {
				u64 iov[2] = {};
				if (bpf_probe_read_user(iov, sizeof(iov), (void *)(j->addr + 16 * (u64)w->idx))) {
					copy_fault(w);
					w->idx = j->cnt;
					continue;
				}
				w->idx++;
				w->seg_addr = iov[0];
				w->seg_left = iov[1] < w->left ? iov[1] : w->left;
				/* copy from the new segment in this same step */
				if (w->seg_left == 0)
					continue;
			} else {
			if (!at_exit && j->type == J_ARGV && w->idx < DR_ARGV_MAX) {
				u64 ptr = 0;
				if (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)(j->addr + 8 * (u64)w->idx)))
					ptr = 0;
				w->idx++;
				if (ptr) {
					if (w->pos > DR_CHUNK - DR_STR_MAX) {
						j->total = w->off + w->pos;
						flush(w, j);
					}
					u32 pos = w->pos & (DR_CHUNK - 1);
					long n = bpf_probe_read_user_str(data + pos, DR_STR_MAX, (void *)ptr);
					if (n > 0)
						w->pos = pos + (n & (DR_STR_MAX * 2 - 1));
					else
						copy_fault(w);
					continue;
				}
				w->idx = DR_ARGV_MAX;   /* the NULL ends argv */
			}
			if (j->type == J_ARGV)
				j->total = w->off + w->pos;
			flush(w, j);
			w->job = ji + 1;
			w->started = 0;
			continue;
			}
		}
		u32 pos = w->pos & (DR_CHUNK - 1);
		u64 room = DR_CHUNK - pos;
		u64 n = w->seg_left;
		if (n > room)
			n = room;
		if (w->bypage) {
			u64 pg = DR_PAGE - (w->seg_addr & (DR_PAGE - 1));
			if (n > pg)
				n = pg;
		}
		n &= (2 * DR_CHUNK - 1);
		if (n > DR_CHUNK)
			n = DR_CHUNK;
		if (bpf_probe_read_user(data + pos, n, (void *)w->seg_addr)) {
			/* A probe cannot fault a page in: some page of the piece is
			 * not present. At exit, read it again a page at a time and
			 * keep what the readable pages hold. A page still unreadable
			 * after the call was neither read nor written by the kernel
			 * (it faults pages in): for an upper-bound size (j->upto) the
			 * buffer the kernel used ends there, and nothing is lost (a
			 * name read to its NUL just before an unmapped page). For a
			 * size the kernel moved (a return value) it is a copy fault. */
			if (at_exit && j->type == J_PLAIN && !w->bypage) {
				w->bypage = 1;
				continue;
			}
			if (at_exit && j->upto) {
				j->total = w->off + w->pos;
				w->seg_left = 0;
				w->left = 0;
				continue;
			}
			copy_fault(w);
			w->idx = j->cnt;
			continue;
		}
		w->pos = pos + n;
		w->seg_addr += n;
		w->seg_left -= n;
		w->left -= n;
		if (w->pos >= DR_CHUNK)
			flush(w, j);
	}
	if (w->job < w->njobs) {
		/* Out of steps: the rest of the bytes is lost (and counted). */
		count_loss(DR_LOSS_COPY_STEPS);
		w->ev.flags |= DR_EVF_PAYLOAD_LOST;
	}
}

static __always_inline int is_clone(s64 nr)
{
	return nr == DR_NR_clone || nr == DR_NR_clone3 || nr == DR_NR_fork || nr == DR_NR_vfork;
}

/* Raw tracepoints: the program gets the tracepoint's arguments directly,
 * without the perf record a classic tracepoint program pays for on every
 * syscall of the system. sys_enter(regs, id), sys_exit(regs, ret). */
RAW_TRACEPOINT_PROBE(sys_enter)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	if (!maybe_traced(tgid, tid))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct dr_task *t = tasks.task_storage_get(task, 0, 0);
	if (!t) {
		if (!traced(tgid, tid))
			return 0;
		struct dr_task fresh = {};
		fresh.tgid = tgid;
		t = tasks.task_storage_get(task, &fresh, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!t) {
			count_loss(DR_LOSS_ENTRY_MAP_FULL);
			return 0;
		}
	}
	s64 nr = ctx->args[1];
	/* x86_64 struct pt_regs from r10 to di (arch/x86/include/asm/ptrace.h):
	 * r10 r9 r8 ax cx dx si di -- the syscall arguments are di si dx r10 r8 r9 */
	u64 r[8] = {};
	bpf_probe_read_kernel(r, sizeof(r), (u8 *)ctx->args[0] + 7 * 8);
	t->seq++;
	t->nr = nr;
	t->ts_enter = bpf_ktime_get_ns();
	t->in_call = 1;
	t->flags = 0;
	t->args[0] = r[7];
	t->args[1] = r[6];
	t->args[2] = r[5];
	t->args[3] = r[0];
	t->args[4] = r[2];
	t->args[5] = r[1];

	if (nr == DR_NR_exit || nr == DR_NR_exit_group) {
		struct dr_work *w = get_work();
		if (!w)
			return 0;
		ring_begin();
		fill_event(w, t, tid);
		w->ev.flags |= DR_EVF_NO_EXIT;
		emit_event(w);
		ring_end();
		return 0;
	}
	if (nr < 0 || nr >= DR_NR_MAX)
		return 0;
	u32 k = nr;
	u8 *info = nrinfo.lookup(&k);
	if (!info || !(*info & 1))
		return 0;
	struct dr_work *w = get_work();
	if (!w)
		return 0;
	ring_begin();
	fill_event(w, t, tid);
	w->req = 0;
	build_jobs(w, nr, t->args, 0, 0);
	t->req = w->req;
	if (w->njobs)
		run_jobs(w, 0, DR_STEPS);
	/* flags raised while copying at entry (truncated, copy failed, lost)
	 * are carried to the event written at exit. */
	t->flags |= w->ev.flags & (DR_EVF_TRUNCATED | DR_EVF_COPY_FAILED | DR_EVF_PAYLOAD_LOST);
	ring_end();
	return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	s64 ret = ctx->args[1];
	if (!maybe_traced(tgid, tid))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct dr_task *t = tasks.task_storage_get(task, 0, 0);
	if (!t) {
		if (!traced(tgid, tid))
			return 0;
		/* the syscall number: orig_ax of pt_regs */
		s64 id = -1;
		bpf_probe_read_kernel(&id, sizeof(id), (u8 *)ctx->args[0] + 15 * 8);
		/* A thread that was inside a syscall when tracing began, or a new
		 * task returning from clone/fork (its FORK record says so). */
		struct dr_task fresh = {};
		fresh.tgid = tgid;
		fresh.nr = id;
		t = tasks.task_storage_get(task, &fresh, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!t) {
			count_loss(DR_LOSS_ENTRY_MAP_FULL);
			return 0;
		}
		if (!DR_ORPHAN_EXITS || (is_clone(id) && ret == 0))
			return 0;
		t->seq++;
		t->flags = DR_EVF_ENTRY_LOST;
		t->in_call = 1;
		t->nr = id;
		/* The argument registers in pt_regs still hold the values the call
		 * was made with, so the arguments (and out-buffers) are known;
		 * only ts_enter is not. */
		u64 r[8] = {};
		bpf_probe_read_kernel(r, sizeof(r), (u8 *)ctx->args[0] + 7 * 8);
		t->args[0] = r[7];
		t->args[1] = r[6];
		t->args[2] = r[5];
		t->args[3] = r[0];
		t->args[4] = r[2];
		t->args[5] = r[1];
	}
	if (!t->in_call)
		return 0;
	t->in_call = 0;
	struct dr_work *w = get_work();
	if (!w)
		return 0;
	ring_begin();
	fill_event(w, t, tid);
	w->ev.tid ^= t->exec_tid;   /* branch-free: the exec caller's tid, else unchanged */
	t->exec_tid = 0;
	w->ev.ret = ret;
	w->ev.ts_exit = bpf_ktime_get_ns();
	w->req = t->req;
	s64 nr = t->nr;
	if (nr >= 0 && nr < DR_NR_MAX) {
		u32 k = nr;
		u8 *info = nrinfo.lookup(&k);
		/* nrinfo bit 2, execve/execveat: a successful exec's strings were
		 * read at sched_process_exec. A failed one keeps its path (read at
		 * exit, the kernel faulted it in); its argv and envp are not copied:
		 * their strings may sit in pages this process never touched (a
		 * fresh fork), where a probe read faults. */
		if (info && (*info & 2) && !((*info & 4) && ret >= 0)) {
			build_jobs(w, nr, t->args, ret, 1);
			if (w->njobs == 1 && w->jobs[0].type == J_PLAIN && w->jobs[0].len <= DR_CHUNK) {
				/* The common case (read, write, stat, ...): one buffer of at
				 * most one chunk, copied here without the copier and written
				 * with the event as one record. */
				struct dr_job *j = &w->jobs[0];
				u64 n = j->len;
				if (n > DR_CHUNK)
					n = DR_CHUNK;
				if (!bpf_probe_read_user(w->buf + sizeof(struct dr_syscall_event_data), n,
							 (void *)j->addr)) {
					emit_event_data(w, j, n);
					ring_end();
					return 0;
				}
				/* a page of it is not readable: the copier takes what is */
			}
			if (w->njobs)
				run_jobs(w, 1, DR_STEPS);
		}
	}
	emit_event(w);
	ring_end();
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 ptid = pt, ptgid = pt >> 32;
	if (!traced(ptgid, ptid))
		return 0;
	u32 child = args->child_pid;
	int thread = 0;
	struct dr_task *t = tasks.task_storage_get(bpf_get_current_task_btf(), 0, 0);
	if (t && t->in_call) {
		if (t->nr == DR_NR_clone) {
			thread = (t->args[0] & DR_CLONE_THREAD) != 0;
		} else if (t->nr == DR_NR_clone3) {
			u64 fl = 0;
			bpf_probe_read_user(&fl, sizeof(fl), (void *)t->args[0]);
			thread = (fl & DR_CLONE_THREAD) != 0;
		}
	}
	if (!thread) {
		if (!DR_FOLLOW || DR_TID_FILTER)
			return 0;
		set_traced(child, 1);
	} else if (DR_TID_FILTER) {
		return 0;
	}
	ring_begin();
	emit_proc(DR_PROC_FORK, ptgid, ptid, child, thread ? ptgid : child);
	ring_end();
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	if (!traced(tgid, tid))
		return 0;
	ring_begin();
	emit_proc(DR_PROC_EXEC, tgid, tid, args->old_pid, 0);
	struct task_struct *task = bpf_get_current_task_btf();
	struct dr_task *t = tasks.task_storage_get(task, 0, 0);
	struct dr_work *w = get_work();
	if (t && w && t->in_call && (t->nr == DR_NR_execve || t->nr == DR_NR_execveat)) {
		u64 sp = 0;
		/* x86_64 struct pt_regs: sp is its 20th u64 (arch/x86/include/asm/ptrace.h) */
		bpf_probe_read_kernel(&sp, sizeof(sp), (u8 *)bpf_task_pt_regs(task) + 19 * 8);
		/* An exec by a thread other than the leader takes the leader's tid
		 * (de_thread): the call and its strings stay the caller's. */
		t->exec_tid = args->old_pid ^ tid;   /* sys_exit xors it into its tid */
		fill_event(w, t, args->old_pid);
		build_exec_jobs(w, t->nr, sp);
		if (w->njobs)
			run_jobs(w, 1, DR_EXEC_STEPS);
		t->flags |= w->ev.flags & (DR_EVF_TRUNCATED | DR_EVF_COPY_FAILED | DR_EVF_PAYLOAD_LOST);
	}
	ring_end();
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	struct task_struct *task = bpf_get_current_task_btf();
	struct dr_task *t = tasks.task_storage_get(task, 0, 0);
	if (!t && !traced(tgid, tid))
		return 0;
	s64 code = -1;
	ring_begin();
	if (t && t->in_call) {
		if (t->nr == DR_NR_exit || t->nr == DR_NR_exit_group) {
			code = t->args[0] & 0xff;
		} else {
			/* The thread died inside this call: it never returns. */
			struct dr_work *w = get_work();
			if (w) {
				fill_event(w, t, tid);
				w->ev.flags |= DR_EVF_NO_EXIT;
				emit_event(w);
			}
		}
	}
	emit_proc(DR_PROC_EXIT, tgid, tid, code, args->group_dead);
	ring_end();
	if (t)
		tasks.task_storage_delete(task);
	if (args->group_dead && tid == tgid && !DR_TID_FILTER)
		set_traced(tgid, 0);
	return 0;
}

TRACEPOINT_PROBE(signal, signal_deliver)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	if (!traced(tgid, tid))
		return 0;
	/* A signal whose action is to be ignored changes nothing in the task.
	 * The kernel drops it when it is sent, unless the task is ptraced (spawn
	 * mode follows the tree's execs that way): then it is delivered, and
	 * ignored, here. Not recorded, so a trace does not depend on that. */
	u64 h = args->sa_handler;
	int sig = args->sig;
	if (h == 1 || (h == 0 && (sig == 17 || sig == 18 || sig == 23 || sig == 28)))
		return 0;   /* SIG_IGN; SIG_DFL of SIGCHLD, SIGCONT, SIGURG, SIGWINCH */
	ring_begin();
	emit_proc(DR_PROC_SIGNAL, tgid, tid, args->sig, args->sa_handler);
	/* Where the signal interrupted the thread: its user registers (the task's
	 * pt_regs, located by the kernel's own helper, not by a header offset), so
	 * replay can deliver an asynchronous signal at the same instruction. */
	struct dr_signal_regs *r = 0;
	for (int i = 0; i < DR_RB_TRIES && !r; i++)
		r = rb.ringbuf_reserve(sizeof(struct dr_signal_regs));
	if (r) {
		r->kind = DR_REC_SIGNAL_REGS;
		r->sig = args->sig;
		r->cpu = bpf_get_smp_processor_id();
		r->tgid = tgid;
		r->tid = tid;
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
		if (!regs || bpf_probe_read_kernel(r->regs, sizeof(r->regs), regs))
			__builtin_memset(r->regs, 0, sizeof(r->regs));
		rb.ringbuf_submit(r, DR_RB_FLAGS);
	} else {
		count_loss(DR_LOSS_RINGBUF_PROC);
	}
	ring_end();
	return 0;
}
