//go:build race

package wstransport

import (
	"runtime"
	"unsafe"
)

// handOff and takeOver tell the race detector what epoll guarantees: a
// connection's state, built before nbio registers its descriptor, is seen
// whole by the poller that reports its events. nbio's hand-over is
// go:norace and synchronises through system calls, which the detector
// cannot see.
func handOff(ec *elConn)  { runtime.RaceReleaseMerge(unsafe.Pointer(ec)) }
func takeOver(ec *elConn) { runtime.RaceAcquire(unsafe.Pointer(ec)) }
