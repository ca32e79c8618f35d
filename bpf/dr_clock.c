/* Clock values a traced process read without a syscall (its vDSO), attach mode.
 *
 * Appended to dr_capture.c (capture/probes.py: PROGRAM_FILES), so one program:
 * the traced set, the ring buffer and the loss counters are dr_capture.c's. dr/capture/clocks.py attaches
 * these to the target's own libc and Go runtime with uprobes: kernel
 * breakpoints, which change nothing the process can see (its memory, its
 * registers and its stack stay as they were; a uretprobe rewrites the return
 * address only while the function runs, which is why Go gets none).
 *
 * - libc clock_gettime(clockid, tp): the entry probe keeps (clockid, tp) per
 *   thread; a probe on the instruction after its call into the vDSO reads
 *   the vDSO's result (AX) and *tp, as the caller will. (No uretprobe: its
 *   return trampoline is a syscall on 6.x kernels, which the trace would show.)
 * - Go's time.now (runtime/time_linux_amd64.s, ABIInternal) returns AX =
 *   REALTIME seconds, BX = nanoseconds, CX = the CLOCK_MONOTONIC ns it read
 *   too: a uprobe on time.Now's first branch after the call, AX and BX intact
 *   there (CX already adjusted: mono recorded as 0), or on time.now's RET. No
 *   uretprobe: the Go runtime moves goroutine stacks, and a rewritten return
 *   address breaks that.
 */

struct dr_clock_call {
	u64 tp;
	s32 clockid;
};

BPF_HASH(clock_calls, u32, struct dr_clock_call, 16384);

static __always_inline void emit_clock(u16 source, u32 tgid, u32 tid, s32 clockid, s32 ret,
				       s64 sec, s64 nsec, s64 mono)
{
	ring_begin();
	struct dr_clock_read *r = 0;
	for (int i = 0; i < DR_RB_TRIES && !r; i++)
		r = rb.ringbuf_reserve(sizeof(struct dr_clock_read));
	if (r) {
		r->kind = DR_REC_CLOCK_READ;
		r->source = source;
		r->cpu = bpf_get_smp_processor_id();
		r->tgid = tgid;
		r->tid = tid;
		r->clockid = clockid;
		r->ret = ret;
		r->ts = bpf_ktime_get_ns();
		r->sec = sec;
		r->nsec = nsec;
		r->mono = mono;
		rb.ringbuf_submit(r, DR_RB_FLAGS);
	} else {
		count_loss(DR_LOSS_RINGBUF_PROC);
	}
	ring_end();
}

int dr_libc_clock_enter(struct pt_regs *ctx)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	if (!traced(tgid, tid))
		return 0;
	struct dr_clock_call c = {};
	c.clockid = (s32)PT_REGS_PARM1(ctx);
	c.tp = PT_REGS_PARM2(ctx);
	clock_calls.update(&tid, &c);
	return 0;
}

int dr_libc_clock_vdso_returned(struct pt_regs *ctx)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	struct dr_clock_call *c = clock_calls.lookup(&tid);
	if (!c)
		return 0;
	struct dr_clock_call call = *c;
	clock_calls.delete(&tid);
	if (!traced(tgid, tid))
		return 0;
	s64 ts[2] = {0, 0};
	s32 ret = (s32)ctx->ax;   /* the vDSO's result: 0, or -errno */
	if (ret == 0 && bpf_probe_read_user(ts, sizeof(ts), (void *)call.tp))
		ret = -2;   /* the value could not be read: recorded as unknown */
	emit_clock(DR_CLOCK_LIBC_CLOCK_GETTIME, tgid, tid, call.clockid, ret, ts[0], ts[1], 0);
	return 0;
}

int dr_go_time_now(struct pt_regs *ctx)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	if (!traced(tgid, tid))
		return 0;
	emit_clock(DR_CLOCK_GO_TIME_NOW, tgid, tid, 0, 0, (s64)ctx->ax, (s64)ctx->bx, (s64)ctx->cx);
	return 0;
}

int dr_go_time_now_caller(struct pt_regs *ctx)
{
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = pt, tgid = pt >> 32;
	if (!traced(tgid, tid))
		return 0;
	emit_clock(DR_CLOCK_GO_TIME_NOW, tgid, tid, 0, 0, (s64)ctx->ax, (s64)ctx->bx, 0);
	return 0;
}
