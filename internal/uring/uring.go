//go:build linux

// Package uring submits many socket sends in one system call through a
// Linux io_uring. It holds only what the event-loop transport needs: a
// submission ring of SEND operations and their completions, used by one
// goroutine at a time. No Go module that wraps io_uring is available here,
// so the few structures used are laid out below from the kernel's uapi
// header (include/uapi/linux/io_uring.h); everything else is left out.
//
// Where io_uring is not permitted (a seccomp profile, as Docker's default
// one, or io_uring_disabled), New fails and the caller writes as before.
package uring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// From include/uapi/linux/io_uring.h and asm-generic/unistd.h.
const (
	sysSetup = 425
	sysEnter = 426

	setupCQSize             = 1 << 3
	setupClamp              = 1 << 4
	setupSubmitAll          = 1 << 7
	setupCoopTaskrun        = 1 << 8
	featSingleMmap          = 1 << 0
	enterGetEvents          = 1 << 0
	enterExtArg             = 1 << 3
	offSQRing               = 0
	offSQEs                 = 0x10000000
	opSend                  = 26
	msgDontwait             = 0x40
	msgNosignal             = 0x4000
	sqeSize                 = 64
	cqeSize                 = 16
	paramsSize              = 120
	getEventsArgSize        = 24
	maxEntries       uint32 = 4096
)

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  ringOffsets
	cqOff                                                                  ringOffsets
}

// ringOffsets is struct io_sqring_offsets (head, tail, ring_mask,
// ring_entries, flags, dropped, array) or io_cqring_offsets (head, tail,
// ring_mask, ring_entries, overflow, cqes, flags): same size, same first four.
type ringOffsets struct {
	head, tail, ringMask, ringEntries, f4, f5, f6, resv1 uint32
	userAddr                                             uint64
}

// sqe is struct io_uring_sqe, as a SEND uses it.
type sqe struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	msgFlags uint32
	userData uint64
	pad      [3]uint64
}

// cqe is struct io_uring_cqe.
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// getEventsArg is struct io_uring_getevents_arg.
type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

func init() {
	// The layouts above must match the kernel's to the byte.
	if unsafe.Sizeof(params{}) != paramsSize || unsafe.Sizeof(sqe{}) != sqeSize ||
		unsafe.Sizeof(cqe{}) != cqeSize || unsafe.Sizeof(getEventsArg{}) != getEventsArgSize {
		panic("uring: structure sizes do not match the kernel's")
	}
}

// Ring is one io_uring. It is not safe for concurrent use.
type Ring struct {
	fd      int
	ringMem []byte
	sqeMem  []byte

	sqHead, sqTail, sqMask *uint32
	sqArray                unsafe.Pointer
	sqes                   unsafe.Pointer
	cqHead, cqTail, cqMask *uint32
	cqes                   unsafe.Pointer
	entries                uint32

	// Wait's arguments live here, on the heap, where the kernel's pointer
	// to them cannot go stale.
	waitTS  syscall.Timespec
	waitArg getEventsArg

	staged uint32 // SQEs written since the last Submit
	// inflight counts submitted operations whose completion is not reaped.
	inflight uint32
}

// ErrUnavailable wraps the reason io_uring cannot be used here.
var ErrUnavailable = errors.New("uring: io_uring is not available")

// New sets up a ring for up to entries operations per submission.
func New(entries uint32) (*Ring, error) {
	if entries == 0 || entries > maxEntries {
		return nil, fmt.Errorf("uring: %d entries: want 1 to %d", entries, maxEntries)
	}
	// Kernels before 5.19 know no COOP_TASKRUN (a hint), before 5.18 no
	// SUBMIT_ALL (without it a batch stops at a send that fails to start,
	// and Submit submits the rest again); IORING_OP_SEND needs 5.6.
	var p params
	var fd uintptr
	var errno syscall.Errno
	for _, flags := range []uint32{
		setupCQSize | setupClamp | setupSubmitAll | setupCoopTaskrun,
		setupCQSize | setupClamp | setupSubmitAll,
		setupCQSize | setupClamp,
	} {
		p = params{flags: flags, cqEntries: 2 * entries}
		fd, _, errno = syscall.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
		if errno != syscall.EINVAL {
			break
		}
	}
	if errno != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %v", ErrUnavailable, errno)
	}
	r := &Ring{fd: int(fd), entries: p.sqEntries}
	syscall.CloseOnExec(r.fd)
	if p.features&featSingleMmap == 0 {
		r.Close()
		return nil, fmt.Errorf("%w: kernel before 5.4 (no single mmap)", ErrUnavailable)
	}
	size := max(p.sqOff.f6+p.sqEntries*4, p.cqOff.f5+p.cqEntries*cqeSize)
	var err error
	if r.ringMem, err = syscall.Mmap(r.fd, offSQRing, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("%w: mmap the rings: %v", ErrUnavailable, err)
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, offSQEs, int(p.sqEntries*sqeSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("%w: mmap the submission entries: %v", ErrUnavailable, err)
	}
	base := unsafe.Pointer(&r.ringMem[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask = at(p.sqOff.head), at(p.sqOff.tail), at(p.sqOff.ringMask)
	r.sqArray = unsafe.Add(base, p.sqOff.f6)
	r.cqHead, r.cqTail, r.cqMask = at(p.cqOff.head), at(p.cqOff.tail), at(p.cqOff.ringMask)
	r.cqes = unsafe.Add(base, p.cqOff.f5)
	r.sqes = unsafe.Pointer(&r.sqeMem[0])
	// The array maps ring slots to entries one to one, once for all.
	for i := range p.sqEntries {
		*(*uint32)(unsafe.Add(r.sqArray, 4*i)) = i
	}
	return r, nil
}

// Entries is how many operations one submission can hold.
func (r *Ring) Entries() int { return int(r.entries) }

// Close releases the ring. Operations still in flight finish in the kernel.
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		_ = syscall.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		_ = syscall.Munmap(r.ringMem)
		r.ringMem = nil
	}
	if r.fd >= 0 {
		err := syscall.Close(r.fd)
		r.fd = -1
		return err
	}
	return nil
}

// Send stages a non-blocking send of b on socket fd, reported with tag.
// It returns false when the submission is full (Entries staged). b's
// memory (on the heap: a stack can move) must stay alive and unchanged
// until the completion is reaped, and
// fd must stay open until Submit returns: the kernel takes its own
// reference to the socket then.
//
// MSG_DONTWAIT makes a socket that cannot take all of b report what it
// took, or EAGAIN, at once instead of the kernel waiting for it.
func (r *Ring) Send(fd int, b []byte, tag uint64) bool {
	if r.staged+r.inflight >= r.entries || len(b) == 0 {
		return false
	}
	tail := *r.sqTail // only this side writes the tail
	e := (*sqe)(unsafe.Add(r.sqes, uintptr(tail&*r.sqMask)*sqeSize))
	*e = sqe{
		opcode:   opSend,
		fd:       int32(fd),
		addr:     uint64(uintptr(unsafe.Pointer(&b[0]))),
		len:      uint32(len(b)),
		msgFlags: msgDontwait | msgNosignal,
		userData: tag,
	}
	atomic.StoreUint32(r.sqTail, tail+1) // publishes the entry to the kernel
	r.staged++
	return true
}

// Submit hands the staged operations to the kernel in one system call and
// returns how many it took, in the order they were staged; on an error the
// rest stay staged and the ring should be given up. A send to a socket
// with room completes within the call.
func (r *Ring) Submit() (int, error) {
	taken := 0
	for r.staged > 0 {
		n, _, errno := syscall.Syscall6(sysEnter, uintptr(r.fd), uintptr(r.staged), 0, 0, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return taken, os.NewSyscallError("io_uring_enter", errno)
		}
		if n == 0 {
			// The completion queue is full: not while inflight+staged <= entries.
			return taken, errors.New("uring: the kernel took no submission")
		}
		r.staged -= uint32(n)
		r.inflight += uint32(n)
		taken += int(n)
	}
	return taken, nil
}

// Reap calls f for each completion that has arrived: its tag and the
// bytes sent, or -errno.
func (r *Ring) Reap(f func(tag uint64, res int32)) int {
	head := *r.cqHead // only this side writes the head
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail; head++ {
		c := (*cqe)(unsafe.Add(r.cqes, uintptr(head&*r.cqMask)*cqeSize))
		f(c.userData, c.res)
		n++
	}
	atomic.StoreUint32(r.cqHead, head) // frees the slots
	r.inflight -= uint32(n)
	return n
}

// Inflight is how many submitted operations have not been reaped.
func (r *Ring) Inflight() int { return int(r.inflight) }

// Wait blocks until at least one completion arrives, or timeout passes.
func (r *Ring) Wait(timeoutNanos int64) error {
	r.waitTS = syscall.NsecToTimespec(timeoutNanos)
	r.waitArg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.waitTS)))}
	_, _, errno := syscall.Syscall6(sysEnter, uintptr(r.fd), 0, 1, enterGetEvents|enterExtArg,
		uintptr(unsafe.Pointer(&r.waitArg)), unsafe.Sizeof(r.waitArg))
	switch errno {
	case 0, syscall.EINTR, syscall.ETIME:
		return nil
	}
	return os.NewSyscallError("io_uring_enter", errno)
}

// FD is the ring's descriptor, for tests that break it.
func (r *Ring) FD() int { return r.fd }
